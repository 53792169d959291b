"""Video: frames in and out (PyAV), tracking through a clip, relations over time.

The central type is `relate_anything.video_scene_graph.VideoSceneGraph`.
"""

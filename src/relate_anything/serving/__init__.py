"""Serving relate-anything to people and programs: the web UI (`ui`) and the REST API (`api`:
`create_app`; `worker`: the `InferenceWorker` that owns the pipeline; `cli`: `relate-anything serve`).

Each module imports its web framework itself (Gradio; FastAPI and uvicorn, the `serve` extra),
so importing this package costs nothing.
"""

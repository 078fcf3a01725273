"""The instance's inference server: KServe v2 over FastAPI/uvicorn with an SLO-aware dynamic batcher."""

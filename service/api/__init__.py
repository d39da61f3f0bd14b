"""The FastAPI query layer."""

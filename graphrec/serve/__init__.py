"""Serving: item indexes (exact and faiss) for retrievers."""

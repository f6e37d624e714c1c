"""Data: readers (raw files -> frame), the graph builder, save/load, the synthetic data set."""

from graphrec.data.graph import Dataset, IdMap, build, load, save, summary
from graphrec.data.readers import FORMATS, ColumnNames, RawData, read

__all__ = ["Dataset", "IdMap", "build", "load", "save", "summary", "FORMATS", "ColumnNames",
           "RawData", "read"]

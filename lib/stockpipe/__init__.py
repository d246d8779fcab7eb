"""stockpipe: stock market data through Kafka, Spark and an S3 lake, driven by notebooks."""

from stockpipe.config import Settings, get_settings, load_settings

__all__ = ["Settings", "get_settings", "load_settings"]
__version__ = "0.1.0"

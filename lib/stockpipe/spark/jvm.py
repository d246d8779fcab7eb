"""What a Spark driver takes from setup: the connector jars and the class archive.

`stockpipe setup` fetches the jars (stockpipe.stack.install) and trains the archive
(stockpipe.spark.classcache); the jobs find both through settings, whose defaults
name where setup puts them, so the jobs never import the setup code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stockpipe import versions
from stockpipe.config import Settings
from stockpipe.errors import SetupError

#: The setup cache's parts that hold connector jars, as (name, version): each part's
#: jars are in ``<cache_dir>/<name>-<version>/jars`` (Kafka source + S3A, Delta Lake).
JAR_PARTS = (
    ("spark-jars", f"{versions.SPARK}-hadoop{versions.HADOOP}"),
    ("delta-jars", f"{versions.DELTA}-spark{versions.SPARK}"),
)
#: Options that map the archive; its warnings (a stale archive) stay quiet.
_USE_ARCHIVE = "-XX:SharedArchiveFile={} -Xlog:cds=off -Xlog:cds+dynamic=off"


def jar_dirs(settings: Settings) -> list[Path]:
    """The folders of connector jars: ``spark_jars_dirs``, else the setup cache's."""
    if settings.spark_jars_dirs:
        return [Path(d.strip()) for d in settings.spark_jars_dirs.split(",") if d.strip()]
    return [settings.cache_dir / f"{name}-{version}" / "jars" for name, version in JAR_PARTS]


def connector_jars(settings: Settings) -> list[Path]:
    """The jars Spark gets as local files; an error naming the fix when a folder has none.

    Setup moves a part's folder into place only once its fetch is complete, so a
    folder with jars has all of them.
    """
    jars: list[Path] = []
    for folder in jar_dirs(settings):
        found = sorted(folder.glob("*.jar"))
        if not found:
            raise SetupError(
                f"Spark connector jars are not in {folder}.", fix="run `make setup` first"
            )
        jars += found
    return jars


def default_archive() -> Path:
    """This environment's class archive: next to the pyspark jars it describes.

    HotSpot checks the class path and JDK an archive was made with and ignores a
    stale one, so one archive per environment and Spark version.
    """
    return Path(sys.prefix) / "share" / "stockpipe" / f"spark-{versions.SPARK}.jsa"


def archive_path(settings: Settings) -> Path:
    """Where the class archive is (or would be): ``spark_class_archive``, else the default."""
    return Path(settings.spark_class_archive) if settings.spark_class_archive else default_archive()


def archive_options(settings: Settings) -> str:
    """Driver JVM options that map the class archive; empty when there is none."""
    path = archive_path(settings)
    return _USE_ARCHIVE.format(path) if path.is_file() else ""

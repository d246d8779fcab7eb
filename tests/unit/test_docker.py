"""The Compose deployment's promises, checked on the file itself (no engine here):
pinned images, healthchecks, only UIs published and only on 127.0.0.1, no default
credentials, a 3-node Kafka with replication 3 and min.insync.replicas 2."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml

from stockpipe import versions
from stockpipe.config import PROJECT_ROOT
from stockpipe.deploy import docker_secrets, kafka_cluster_id, write_docker_env
from stockpipe.stack import images
from stockpipe.stack.images import compose_image_env, local_builds

DOCKER = PROJECT_ROOT / "docker"
TEXT = (DOCKER / "compose.yaml").read_text()
#: The file as compose reads it with none of its optional variables set: the official images.
COMPOSE = yaml.safe_load(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", TEXT))
SERVICES: dict[str, dict] = COMPOSE["services"]
ONE_SHOT = {name for name, svc in SERVICES.items() if svc.get("restart") == "no"}
UI_PORTS = {"8080", "8888", "9001", "8090"}


def _env(svc: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (svc.get("environment") or {}).items()}


def test_every_image_is_pinned_or_built_here():
    for name, svc in SERVICES.items():
        image = svc.get("image", "")
        assert image, f"{name} has no image name"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} is not pinned"
    for dockerfile in DOCKER.rglob("Dockerfile"):
        for arg in re.findall(r"^ARG \w+_IMAGE=(\S+)", dockerfile.read_text(), re.M):
            assert ":" in arg and not arg.endswith(":latest"), f"{dockerfile}: {arg}"


def test_versions_match_the_local_stack():
    images = {svc.get("image", "") for svc in SERVICES.values()}
    assert f"apache/kafka:{versions.KAFKA}" in images
    spark = (DOCKER / "spark" / "Dockerfile").read_text()
    assert f"apache/spark:{versions.SPARK}-" in spark
    assert f"MINIO_VERSION={versions.MINIO}" in (DOCKER / "minio" / "Dockerfile").read_text()


def test_every_long_running_service_has_a_healthcheck():
    assert {"lake-init", "airflow-init", "project"} == ONE_SHOT
    for name, svc in SERVICES.items():
        if name not in ONE_SHOT:
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_only_the_uis_are_published_and_only_on_loopback():
    published = {}
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            host_ip, host_port, _container = str(port).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"
            published[name] = host_port
    assert set(published.values()) == UI_PORTS
    assert set(published) == {"airflow-apiserver", "jupyter", "minio", "spark-master"}


#: What may have a default: the images (the local build mode names its own) and host ports.
OPTIONAL = {
    *compose_image_env(),
    "AIRFLOW_PORT",
    "JUPYTER_PORT",
    "MINIO_CONSOLE_PORT",
    "SPARK_UI_PORT",
}


def test_no_credential_has_a_default():
    refs = re.findall(r"(?<!\$)\$\{([A-Z0-9_]++)(:?[-?=+]?)", TEXT)
    assert refs
    for name, op in refs:
        expected = ":-" if name in OPTIONAL else ":?"
        assert op == expected, f"${{{name}}} must be {expected}"
    assert {name for name, op in refs if op == ":?"} == set(docker_secrets())
    assert {name for name, op in refs if op == ":-"} == OPTIONAL
    for svc in SERVICES.values():
        for key, value in _env(svc).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|FERNET", key) and not key.endswith("_FILE"):
                assert value.startswith("${"), f"{key} is written in the file"


def test_kafka_is_three_kraft_nodes_with_replication_3_and_two_in_sync():
    nodes = {n: s for n, s in SERVICES.items() if n.startswith("kafka-")}
    assert len(nodes) == 3
    ids = set()
    for svc in nodes.values():
        env = _env(svc)
        ids.add(env["KAFKA_NODE_ID"])
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert svc["volumes"], "broker data must live in a named volume"
    assert ids == {"1", "2", "3"}
    assert _env(SERVICES["lake-init"])["STOCKPIPE_TOPIC_REPLICATION"] == "3"


def test_airflow_runs_a_real_executor_on_postgres_with_all_components():
    for name in (
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    ):
        env = _env(SERVICES[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert SERVICES[name]["image"] == "stockpipe/project:dev"
    assert _env(SERVICES["airflow-scheduler"])["STOCKPIPE_SPARK_MASTER"].startswith("spark://")


def test_named_volumes_hold_the_data():
    declared = set(COMPOSE["volumes"])
    used = set()
    for svc in SERVICES.values():
        for v in svc.get("volumes", []):
            src = str(v).split(":")[0]
            assert not src.startswith((".", "/")), f"bind mount {v}: use a named volume"
            used.add(src)
    assert used == declared


def test_docker_env_is_generated_private_and_kept(tmp_path: Path):
    path = tmp_path / "docker.env"
    added = write_docker_env(path)
    assert set(added) == set(docker_secrets())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines() if "=" in line)
    assert len(values["STOCKPIPE_S3_SECRET_KEY"]) == 40
    assert len(set(values.values())) == len(values)  # nothing shared, nothing default
    assert write_docker_env(path) == [] and path.read_text() == first  # kept as is
    other = write_docker_env(tmp_path / "again.env")
    assert other and (tmp_path / "again.env").read_text() != first  # fresh each time


@pytest.mark.parametrize("name", ["Dockerfile", "spark/Dockerfile", "minio/Dockerfile"])
def test_dockerfiles_exist_and_run_as_a_non_root_user(name: str):
    text = (DOCKER / name).read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] != "root"


def test_kafka_cluster_ids_never_begin_with_a_dash():
    ids = [kafka_cluster_id() for _ in range(2000)]  # ~1 in 64 raw ids begins with "-"
    assert all(len(i) == 22 and i[0].isalnum() for i in ids)
    assert len(set(ids)) == len(ids)


SPARK_NODES = ("spark-master", "spark-worker-1", "spark-worker-2")
DRIVERS = ("spark-connect", "airflow-scheduler", "jupyter", "lake-init")


def test_spark_authenticates_every_rpc_with_the_generated_secret():
    for name in SPARK_NODES:
        svc = SERVICES[name]
        assert _env(svc)["SPARK_AUTH_SECRET"].startswith("${SPARK_AUTH_SECRET:?")
        script = svc["entrypoint"][2]
        assert "spark.authenticate true" in script
        assert "umask 077" in script and "unset SPARK_AUTH_SECRET" in script
        assert "SPARK_AUTH_SECRET" not in " ".join(svc["command"])  # never on a command line
    for name in DRIVERS:
        assert _env(SERVICES[name])["STOCKPIPE_SPARK_AUTH_SECRET"].startswith(
            "${SPARK_AUTH_SECRET:?"
        )


def test_the_driver_turns_on_rpc_authentication_when_given_a_secret():
    from stockpipe.config import load_settings
    from stockpipe.spark.session import spark_conf

    plain = spark_conf(load_settings(env_file=Path("/nonexistent")))
    assert "spark.authenticate" not in plain
    secured = spark_conf(load_settings(env_file=Path("/nonexistent"), spark_auth_secret="s3"))
    assert secured["spark.authenticate"] == "true"
    assert secured["spark.authenticate.secret"] == "s3"


def test_spark_takes_the_s3_keys_from_the_environment_not_sparkconf():
    from stockpipe.config import load_settings
    from stockpipe.spark.session import spark_conf

    for name in (*DRIVERS, "spark-worker-1", "spark-worker-2", "airflow-apiserver"):
        env = _env(SERVICES[name])
        assert (
            env["AWS_ACCESS_KEY_ID"]
            == "${STOCKPIPE_S3_ACCESS_KEY:?run `stockpipe docker-env` first}"
        )
        assert env["AWS_SECRET_ACCESS_KEY"].startswith("${STOCKPIPE_S3_SECRET_KEY:?")
    settings = load_settings(
        env_file=Path("/nonexistent"),
        s3_access_key="job-key",
        s3_secret_key="job-secret",
    )
    conf = spark_conf(settings)
    assert not any(v in ("job-key", "job-secret") for v in conf.values())
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith(
        "EnvironmentVariableCredentialsProvider"
    )


def test_minio_root_keys_reach_minio_and_lake_init_only():
    holders = {
        name
        for name, svc in SERVICES.items()
        if any("S3_ROOT_" in str(v) for v in _env(svc).values())
    }
    assert holders == {"minio", "lake-init"}
    assert _env(SERVICES["minio"])["MINIO_ROOT_USER"].startswith("${STOCKPIPE_S3_ROOT_ACCESS_KEY")
    assert SERVICES["lake-init"]["command"] == ["init"]  # `stockpipe init` makes the job user


def test_an_old_docker_env_keeps_its_keys_as_minio_root(tmp_path: Path):
    path = tmp_path / "docker.env"
    path.write_text("STOCKPIPE_S3_ACCESS_KEY=stockpipe-old\nSTOCKPIPE_S3_SECRET_KEY=old\n")
    added = write_docker_env(path)
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    assert values["STOCKPIPE_S3_ROOT_ACCESS_KEY"] == "stockpipe-old"
    assert values["STOCKPIPE_S3_ROOT_SECRET_KEY"] == "old"
    assert (
        "STOCKPIPE_S3_ACCESS_KEY" in added and values["STOCKPIPE_S3_ACCESS_KEY"] != "stockpipe-old"
    )


DOCKERFILES = sorted([*DOCKER.rglob("Dockerfile"), *DOCKER.rglob("*.Dockerfile")])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(DOCKER)))
def test_every_dockerfile_takes_its_base_images_as_build_arguments(path: Path):
    text = path.read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases
    for base in bases:
        arg = re.fullmatch(r"\$\{(\w+)\}", base)
        assert arg, f"{path}: FROM {base} is not a build argument"
        assert re.search(rf"^ARG {arg[1]}=\S+", text, re.M), f"{path}: ARG {arg[1]} has no default"


def test_the_local_build_mode_builds_every_image_compose_runs(tmp_path: Path):
    built = [b.tag for b in local_builds(tmp_path)]
    assert len(built) == len(set(built))
    env = compose_image_env()
    runs = {
        re.sub(r"\$\{(\w+):-[^}]*\}", lambda m: env[m[1]], svc["image"])
        for svc in yaml.safe_load(TEXT)["services"].values()
    }
    assert runs <= set(built)
    # each stand-in is built before the images that start from it
    order = {tag: i for i, tag in enumerate(built)}
    for build in local_builds(tmp_path):
        for base in build.args.values():
            if base in order:
                assert order[base] < order[build.tag], f"{build.tag} needs {base} first"
    assert built[0] == images.base_tag()


@pytest.mark.parametrize("name", ["kafka", "postgres", "airflow", "spark"])
def test_the_stand_ins_run_as_a_non_root_user(name: str):
    users = re.findall(r"^USER (\S+)", (DOCKER / "local" / f"{name}.Dockerfile").read_text(), re.M)
    assert users and users[-1] != "root"


def _fake_compose(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "docker-compose"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return fake


def test_compose_runs_on_the_given_engine_project_env_file_and_variables(tmp_path: Path):
    from stockpipe.deploy import COMPOSE_FILE, Deployment

    fake = _fake_compose(tmp_path, 'echo "$DOCKER_HOST|$KAFKA_IMAGE|$*"')
    env_file = tmp_path / "deploy.env"
    dep = Deployment("unix:///x/docker.sock", fake, env_file, "p1", {"KAFKA_IMAGE": "k:1"})
    assert dep.exec("jupyter", "stockpipe", "batch", env={"A": "b"}).stdout.strip() == (
        f"unix:///x/docker.sock|k:1|--project-name p1 --file {COMPOSE_FILE} "
        f"--env-file {env_file} exec -T --env=A=b jupyter stockpipe batch"
    )


def test_a_failing_compose_command_raises_with_its_output(tmp_path: Path):
    from stockpipe.deploy import Deployment
    from stockpipe.errors import StackError

    fake = _fake_compose(tmp_path, 'echo "service kafka-1 is unhealthy" >&2; exit 3')
    dep = Deployment("unix:///x/docker.sock", fake, tmp_path / "deploy.env")
    with pytest.raises(StackError, match=r"(?s)up --detach.*exit 3.*kafka-1 is unhealthy"):
        dep.up(timeout_s=5)


def test_the_jobs_are_clients_of_the_spark_connect_service_in_front_of_the_workers():
    connect = SERVICES["spark-connect"]
    assert "ports" not in connect  # reached on the project network only
    assert connect["command"] == ["spark-connect"]
    assert {"spark-worker-1", "spark-worker-2"} <= set(connect["depends_on"])
    assert _env(connect)["STOCKPIPE_SPARK_CONNECT_BIND"] == "0.0.0.0"
    assert _env(connect)["STOCKPIPE_SPARK_MASTER"] == "spark://spark-master:7077"
    for name in ("airflow-scheduler", "jupyter", "spark-connect"):
        assert _env(SERVICES[name])["STOCKPIPE_SPARK_REMOTE"] == "sc://spark-connect:15002"
    for name in ("airflow-scheduler", "jupyter"):
        assert SERVICES[name]["depends_on"]["spark-connect"] == {"condition": "service_healthy"}


def test_the_connect_server_leaves_a_standalone_cluster_cores_for_the_streaming_driver():
    from stockpipe.config import load_settings
    from stockpipe.stack.spark_connect import server_conf

    def cores(**kw: object) -> str | None:
        return server_conf(load_settings(env_file=Path("/nonexistent"), **kw)).get(
            "spark.cores.max"
        )

    assert cores(spark_master="local[2]") is None  # local mode: the server's own threads
    assert cores(spark_cluster=True, spark_workers=2, spark_worker_cores=2) == "2"
    assert cores(spark_cluster=True, spark_workers=1, spark_worker_cores=1) == "1"
    assert cores(spark_master="spark://m:7077", spark_connect_cores=3) == "3"
    assert _env(SERVICES["spark-connect"])["STOCKPIPE_SPARK_CONNECT_CORES"] == "2"

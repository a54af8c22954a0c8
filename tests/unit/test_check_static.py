"""`knfn check`'s static checks: pure functions over a function's source and manifests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from knfn.check import codebase, config, dependencies, parity, processes, runtime
from knfn.check.model import Finding
from knfn.check.source import FunctionSource, Subject
from knfn.manifests import Container, EnvFrom, Service

HERE = Path(__file__).resolve().parent  # inside the repository's git work tree
PINNED = "functions-framework==3.10.2\nflask==3.1.3\n"
PROVIDED = {
    "flask": ("Flask",),
    "functions_framework": ("functions-framework",),
    "yaml": ("PyYAML",),
    "PIL": ("pillow",),
}


def subject(
    code: str,
    *,
    requirements: str | None = PINNED,
    env: tuple[tuple[str, str], ...] = (),
    env_from: tuple[EnvFrom, ...] = (),
    secrets: Mapping[tuple[str, str], tuple[Path, Mapping[str, str]]] | None = None,
    annotations: Mapping[str, str] | None = None,
    image: str = "knfn/fx:dev",
) -> Subject:
    """A function `fx` whose main.py is `code`."""
    template = {"spec": {"containers": [{"image": image}]}}
    service = Service(
        "fx",
        "default",
        Path("service-fx.yaml"),
        annotations or {},
        Container(env, env_from),
        10,
        30,
        30,
        template,
    )
    source = FunctionSource.of(HERE, {"main.py": code}, requirements)
    return Subject(service, source, secrets or {}, ("migrate",))


def statuses(found: list[Finding]) -> list[str]:
    return [f.status for f in found]


def test_clean_code_has_no_findings() -> None:
    """A function that reads env and returns an answer: nothing found by any static check."""
    s = subject("import os\nimport flask\ndef handle(r):\n    return os.environ['GREETING']\n")
    checks = [
        codebase.codebase,
        codebase.build_release_run,
        config.config,
        config.backing_services,
        processes.processes,
        runtime.port_binding,
        runtime.concurrency,
        runtime.disposability,
        parity.parity,
        parity.logs,
        parity.admin,
    ]
    assert [f for check in checks for f in check(s)] == []
    assert dependencies.dependencies(s, PROVIDED) == []


@pytest.mark.parametrize(
    ("requirements", "expected"),
    [
        ("flask>=3\nfunctions-framework==3.10.2\n", ["fail"]),
        ("flask\nfunctions-framework==3.10.2\n", ["fail"]),
        ("flask==3.*\nfunctions-framework==3.10.2\n", ["fail"]),
        ("flask ==3.1.3  # the web framework\nfunctions-framework==3.10.2\n", []),
        ("-r other.txt\n" + PINNED, ["warn"]),
        # not a requirement, so flask is not declared either
        ("flask==3.1.3 ;;\nfunctions-framework==3.10.2\n", ["fail", "fail"]),
    ],
)
def test_requirements_must_be_pinned(requirements: str, expected: list[str]) -> None:
    """Only name==version is a pin: ranges, bare names, wildcards and junk are not."""
    s = subject("import flask\n", requirements=requirements)
    assert statuses(dependencies.dependencies(s, PROVIDED)) == expected


def test_imports_must_be_declared() -> None:
    """A library imported but not listed fails; stdlib, the kit and local modules need no line;
    an import nothing here provides is a warn (cannot tell), not a pass."""
    code = "import json, kit, helpers\nimport yaml\nfrom PIL import Image\nimport nowhere\n"
    s = subject(code, requirements=PINNED + "pillow==13.0.0\n")
    s = Subject(
        s.service,
        FunctionSource.of(HERE, {"main.py": code, "helpers.py": ""}, PINNED + "pillow==13.0.0\n"),
    )
    found = dependencies.dependencies(s, PROVIDED)
    assert [(f.status, f.evidence.split()[2].strip(",")) for f in found] == [
        ("fail", "yaml"),
        ("warn", "nowhere"),
    ]


def test_no_requirements_file_fails() -> None:
    """A function without requirements.txt declares nothing."""
    assert statuses(dependencies.dependencies(subject("", requirements=None), PROVIDED)) == ["fail"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ('PASSWORD = "hunter2"\n', ["fail"]),
        ('connect(user="app", password="s3cret")\n', ["fail"]),
        ('TOKEN_HEADER = "Authorization"\n', []),
        ('WEBHOOK_TOKEN = "MINIO_WEBHOOK_TOKEN"\n', []),  # the name of a variable, not a value
        ('import os\nkey = os.getenv("API_KEY", "abc123")\n', ["fail"]),
        ('URL = "postgresql://app:hunter2@db:5432/app"\n', ["fail"]),
        ('KEY_ID = "AKIAABCDEFGHIJKLMNOP"\n', ["fail"]),
        ('"""Set PASSWORD = "x" in the env."""\n', []),  # docstrings describe, they do not run
    ],
)
def test_credentials_in_code(code: str, expected: list[str]) -> None:
    """A credential given a value in code fails factor 3; names and docs of them do not."""
    assert statuses(config.config(subject(code))) == expected


def test_secrets_in_git_must_be_placeholders() -> None:
    """A Secret the Service reads that holds a real-looking credential fails; templates pass."""
    ref = (EnvFrom("Secret", "creds"),)
    template = {
        "DATABASE_URL": "postgresql://app:change-me@db/app",
        "S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_SECRET_ACCESS_KEY": "change-me-secret-key",
    }
    real = {**template, "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"}
    at = Path("secret-creds.yaml")
    assert (
        config.config(subject("", env_from=ref, secrets={("default", "creds"): (at, template)}))
        == []
    )
    found = config.config(subject("", env_from=ref, secrets={("default", "creds"): (at, real)}))
    assert statuses(found) == ["fail"] and "AWS_SECRET_ACCESS_KEY" in found[0].evidence


def test_credentials_in_manifest_env_fail() -> None:
    """A password given as a plain env value in the Service is in git: fail."""
    assert statuses(
        config.config(subject("", env=(("DB_PASSWORD", "x1"), ("LOG_LEVEL", "INFO"))))
    ) == ["fail"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ('DB = "postgresql://db.internal:5432/app"\n', ["fail"]),
        ('S3 = "http://localhost:9000"\n', ["fail"]),
        ('DSN = "host=db user=app dbname=app"\n', ["fail"]),
        ('client("s3", endpoint_url="http://minio.example.com:9000")\n', ["fail"]),
        ('QUERY = "http://query.default.svc.cluster.local"\n', []),
    ],
)
def test_backing_service_addresses_in_code(code: str, expected: list[str]) -> None:
    """Backing services are named by env; a Knative Service URL is not a backing service."""
    assert statuses(config.backing_services(subject(code))) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("n = 0\ndef h(r):\n    global n\n    n += 1\n", ["fail"]),
        ("seen = []\ndef h(r):\n    seen.append(r)\n", ["fail"]),
        ("cache = {}\ndef h(r):\n    cache[r] = 1\n", ["fail"]),
        ("cache = {}\ndef h(r):\n    cache = {}\n    cache[r] = 1\n", []),  # a local of its own
        ("LIMITS = {'a': 1}\ndef h(r):\n    return LIMITS['a']\n", []),  # read only
    ],
)
def test_module_state_changed_by_a_handler(code: str, expected: list[str]) -> None:
    """A function that changes module-level state fails factor 6; reading it is fine."""
    assert statuses(processes.processes(subject(code))) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def h(r):\n    open('data.txt', 'w').write('x')\n", ["fail"]),
        (
            "from pathlib import Path\nF = Path(__file__).parent / 'x'\n"
            "def h(r):\n    F.write_text('x')\n",
            ["fail"],
        ),
        ("def h(r):\n    open('/tmp/x', 'w')\n", []),
        (
            "import tempfile, os\n"
            "def h(r):\n    open(os.path.join(tempfile.gettempdir(), 'x'), 'w')\n",
            [],
        ),
        ("def h(r, p):\n    open(p, 'w')\n", ["warn"]),  # cannot tell where
        ("def h(r):\n    open('data.txt')\n", []),  # reading
        ("def h(r):\n    open('app.log', 'a')\n", []),  # a log file: factor 11's
    ],
)
def test_files_written_outside_tmp(code: str, expected: list[str]) -> None:
    """Writing outside /tmp fails factor 6; an unknown path warns; /tmp and reads pass."""
    assert statuses(processes.processes(subject(code))) == expected


def test_port_binding_concurrency_disposability() -> None:
    """An own server, own processes, a blocked SIGTERM and a sleep at import each fail."""
    assert statuses(
        runtime.port_binding(subject("import flask\napp = flask.Flask('x')\napp.run(port=5000)\n"))
    ) == ["fail"]
    assert statuses(runtime.concurrency(subject("import os\nos.fork()\n"))) == ["fail"]
    assert statuses(
        runtime.concurrency(subject("", annotations={"autoscaling.knative.dev/max-scale": "1"}))
    ) == ["warn"]
    assert statuses(
        runtime.disposability(
            subject("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n")
        )
    ) == ["fail"]
    assert statuses(
        runtime.disposability(
            subject("import signal as s\ns.pthread_sigmask(s.SIG_BLOCK, {s.SIGTERM})\n")
        )
    ) == ["fail"]
    assert statuses(runtime.disposability(subject("import time\ntime.sleep(4)\n"))) == ["fail"]
    assert runtime.disposability(subject("import time\ndef h(r):\n    time.sleep(1)\n")) == []


def test_parity_logs_admin() -> None:
    """Local-only stores and knfn's variables break parity; log files break logs; DDL and bucket
    set-up in a function break admin processes."""
    assert statuses(parity.parity(subject("import sqlite3\n"))) == ["fail"]
    assert statuses(parity.parity(subject("import os\nx = os.getenv('KNFN_PORT')\n"))) == ["fail"]
    assert statuses(
        parity.parity(subject("import os\nif os.environ['ENV'] == 'dev':\n    pass\n"))
    ) == ["warn"]
    assert statuses(
        parity.logs(subject("import logging\nlogging.basicConfig(filename='a.log')\n"))
    ) == ["fail"]
    assert (
        statuses(
            parity.logs(subject("import logging, sys\nlogging.basicConfig(stream=sys.stdout)\n"))
        )
        == []
    )
    assert statuses(
        parity.logs(subject("from logging import FileHandler\nh = FileHandler('x')\n"))
    ) == ["fail"]
    assert statuses(parity.admin(subject('SQL = "CREATE TABLE t (id int)"\n'))) == ["fail"]
    assert statuses(parity.admin(subject("def h(s3):\n    s3.create_bucket(Bucket='b')\n"))) == [
        "fail"
    ]
    assert parity.admin(subject('SQL = "INSERT INTO t VALUES (1)"\n')) == []


def test_codebase_and_build() -> None:
    """Importing knfn or reaching past the folder breaks the codebase; installing at run time
    and an image not named after the function are build/release/run findings."""
    assert statuses(codebase.codebase(subject("import knfn\n"))) == ["fail"]
    assert statuses(codebase.codebase(subject("import sys\nsys.path.insert(0, '../other')\n"))) == [
        "fail"
    ]
    assert statuses(codebase.codebase(subject("def broken(:\n"))) == ["fail"]
    pip = "import subprocess\nsubprocess.run(['pip', 'install', 'x'])\n"
    assert statuses(codebase.build_release_run(subject(pip))) == ["fail"]
    assert statuses(codebase.build_release_run(subject("", image="knfn/other:dev"))) == ["warn"]
    assert statuses(codebase.build_release_run(subject("", image=""))) == ["fail"]

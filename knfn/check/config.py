"""Factors 3 (config) and 4 (backing services): nothing secret and no address in code or git.

Config is env only: a credential written in code (a password, a token, a key) or given a value
in the manifest's ``env`` fails, and so does a Secret in the repository that holds a real
value instead of a placeholder. Backing services are attached resources named by URL in the
environment: a database URL, a DSN or a loopback endpoint written in code fails.
"""

from __future__ import annotations

import ast
import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from knfn.check.model import Finding
from knfn.check.source import Module, Subject, calls, constant_str, short, strings

# A name that holds a credential: it ends with one of these words (DB_PASSWORD, API_TOKEN).
SECRET_NAME = re.compile(
    r"(pass(word)?|passwd|pwd|secret|token|api_?key|access_?key|secret_?key|private_?key|"
    r"credentials?|auth)$",
    re.IGNORECASE,
)
# Credentials recognisable by their shape alone, whatever holds them.
SECRET_SHAPE = re.compile(
    r"^(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
    r"sk_live_[A-Za-z0-9]{10,})$|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # "MINIO_WEBHOOK_TOKEN" names a variable
PLACEHOLDER = re.compile(r"change-?me|placeholder|example|replace-?me|<[^>]*>|\$\{", re.I)
BACKING_SCHEMES = frozenset(
    {
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "mongodb",
        "mongodb+srv",
        "redis",
        "rediss",
        "amqp",
        "amqps",
        "s3",
        "memcached",
        "nats",
        "kafka",
    }
)
LOOPBACK = frozenset({"localhost", "127.0.0.1", "0.0.0.0", "::1"})
DSN = re.compile(r"\b(host|dbname|user)=\S+.*\b(host|dbname|user|password)=", re.I)
FIX_CODE = "read it from the environment (a Secret through envFrom: secretRef)"


def _named_literals(module: Module) -> Iterator[tuple[ast.AST, str, str]]:
    """(node, name, value) for each string literal given to a name: assignments, keyword
    arguments, dict entries, and defaults of os.getenv / os.environ.get."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = constant_str(node.value)
            for target in targets:
                name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
                if value is not None and name:
                    yield node, name, value
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                value = constant_str(kw.value)
                if kw.arg and value is not None:
                    yield node, kw.arg, value
        elif isinstance(node, ast.Dict):
            for key, val in zip(node.keys, node.values, strict=True):
                k, v = constant_str(key), constant_str(val)
                if k is not None and v is not None:
                    yield node, k, v


def _env_defaults(subject: Subject) -> Iterator[tuple[Module, ast.Call, str, str]]:
    for module, call, name in calls(subject.source):
        if name in ("os.getenv", "os.environ.get") and len(call.args) >= 2:
            var, default = constant_str(call.args[0]), constant_str(call.args[1])
            if var is not None and default:
                yield module, call, var, default


def looks_real(key: str, value: str) -> bool:
    """Whether a Secret's value in git looks like a real credential, not a template's."""
    if not value or PLACEHOLDER.search(value):
        return False
    if "://" in value:
        password = urlsplit(value).password
        return bool(password) and not PLACEHOLDER.search(password or "")
    return bool(SECRET_NAME.search(key)) or bool(SECRET_SHAPE.search(value))


def config(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module in subject.source.modules:
        for node, name, value in _named_literals(module):
            if value and SECRET_NAME.search(name) and not ENV_NAME.match(value):
                found.append(
                    Finding(
                        "fail",
                        f"{module.at(node)} {name} = {short(value, 12)}: a "
                        "credential written in code",
                        FIX_CODE,
                    )
                )
    for module, call, var, default in _env_defaults(subject):
        if SECRET_NAME.search(var):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(call)} {var} defaults to {short(default, 12)} in code",
                    "give it no default: fail fast when the Secret is missing",
                )
            )
    for module, node in strings(subject.source):
        value = str(node.value)
        if SECRET_SHAPE.search(value) or ("://" in value and _password(value)):
            found.append(
                Finding(
                    "fail",
                    f"{module.at(node)} {short(value, 16)} holds a credential in code",
                    FIX_CODE,
                )
            )
    for var, value in subject.service.container.env:
        if value and (SECRET_NAME.search(var) or SECRET_SHAPE.search(value)):
            found.append(
                Finding(
                    "fail",
                    f"{subject.manifest}: env {var} has its value in git",
                    f"move {var} into a Secret and use envFrom: secretRef",
                )
            )
    for ref in subject.service.container.env_from:
        key = (subject.service.namespace, ref.name)
        if ref.kind != "Secret" or key not in subject.secrets:
            continue
        path, data = subject.secrets[key]
        for k, v in data.items():
            if looks_real(k, v):
                found.append(
                    Finding(
                        "fail",
                        f"{path.name}: Secret {ref.name} holds a real-looking value for {k} in git",
                        "keep a placeholder (change-me) in git; create the real Secret out of band",
                    )
                )
    return found


def _password(value: str) -> bool:
    try:
        password = urlsplit(value).password
    except ValueError:
        return False
    return bool(password) and not PLACEHOLDER.search(password or "")


def secret_data(doc: Mapping[str, object]) -> dict[str, str]:
    """A Secret's values: stringData as written, data decoded from base64."""
    out: dict[str, str] = {}
    data = doc.get("data")
    for k, v in (data if isinstance(data, dict) else {}).items():
        try:
            out[str(k)] = base64.b64decode(str(v), validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            out[str(k)] = str(v)
    string_data = doc.get("stringData")
    out.update(
        {str(k): str(v) for k, v in (string_data if isinstance(string_data, dict) else {}).items()}
    )
    return out


def config_passed(subject: Subject) -> str:
    refs = ", ".join(f"{r.kind} {r.name}" for r in subject.service.container.env_from)
    return (
        f"config from env only ({refs or 'env in the manifest'}); no credential in code or "
        "in git (Secrets hold placeholders)"
    )


def backing_services(subject: Subject) -> list[Finding]:
    found: list[Finding] = []
    for module, node in strings(subject.source):
        value = str(node.value)
        problem = _address(value)
        if problem:
            found.append(
                Finding(
                    "fail",
                    f"{module.at(node)} {short(value)} {problem}",
                    "name the backing service by a URL in env (DATABASE_URL, "
                    "S3_ENDPOINT_URL), set per deploy",
                )
            )
    for module, call, name in calls(subject.source):
        for kw in call.keywords:
            address = constant_str(kw.value)
            if kw.arg in ("endpoint_url", "host", "dsn", "conninfo") and address and "." in address:
                found.append(
                    Finding(
                        "fail",
                        f"{module.at(call)} {name}({kw.arg}={short(address)}) "
                        "fixes a backing service's address in code",
                        f"pass {kw.arg} from env",
                    )
                )
    return found


def _address(value: str) -> str:
    """Why a literal names a backing service ('' when it does not)."""
    if DSN.search(value):
        return "is a database connection string in code"
    if "://" not in value or any(c.isspace() for c in value.strip()):
        return ""
    try:
        url = urlsplit(value)
        host = url.hostname or ""
    except ValueError:
        return ""
    if url.scheme.lower() in BACKING_SCHEMES and host:
        return f"names a {url.scheme} server in code"
    if host in LOOPBACK:
        return "names a loopback address, which differs per deploy"
    return ""


def backing_services_passed(subject: Subject) -> str:
    return (
        "no backing-service address in code: they come from env as URLs, swapped per "
        "deploy without a code change"
    )

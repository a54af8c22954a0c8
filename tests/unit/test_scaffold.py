"""knfn new's pure parts: names, trigger names, the kustomization text edits, the plan."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from knfn import scaffold
from knfn.scaffold import EditError, NoSiblings, ScaffoldError

REPO = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"

KUSTOMIZATION = """\
# The one source of truth.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  # configuration
  - config.yaml
  # functions (Knative Services)
  - service-hello.yaml
  - service-query.yaml
  # eventing
  - broker.yaml
  - trigger-a.yaml
  # admin processes
  - job-migrate.yaml"""

OVERLAY = """\
resources:
  - ../../base
patches:
  - path: broker-class.yaml
# Images: comment kept.
images:
  - name: knfn/hello
    newName: registry.example.com/knfn/hello
    digest: sha256:0000
  - name: knfn/query
    newName: registry.example.com/knfn/query
    digest: sha256:0000
  - name: quay.io/minio/minio
    digest: sha256:1111
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the repository's knative/ and functions/ (no caches)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("knative", "functions"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


# ---- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "welcome", "order-audit", "a1", "x" * 63, "a--b"])
def test_valid_names(name: str) -> None:
    """DNS-1035 labels of up to 63 characters are Service names."""
    assert scaffold.name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty"),
        ("x" * 64, "64 characters long"),
        ("Welcome", "DNS-1035"),
        ("1st", "DNS-1035"),
        ("-a", "DNS-1035"),
        ("a-", "DNS-1035"),
        ("a_b", "DNS-1035"),
        ("a.b", "DNS-1035"),
    ],
)
def test_invalid_names_say_why(name: str, fragment: str) -> None:
    """Upper case, a leading digit or dash, a trailing dash, _ or . and length are refused."""
    problem = scaffold.name_problem(name)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    ("service", "event_type", "trigger"),
    [
        ("pinger", "dev.knfn.pinger.requested", "pinger-requested"),
        ("order-audit", "com.example.order.created", "order-audit-order-created"),
        ("catalog", "dev.knfn.object.stored", "catalog-object-stored"),
        ("a", "Weird Type!", "a-weird-type"),
        ("a", "...", "a-events"),
        ("x" * 60, "dev.example.created", "x" * 60 + "-ex"),
    ],
)
def test_trigger_names(service: str, event_type: str, trigger: str) -> None:
    """<service>-<what the type says>, a DNS-1035 label of at most 63 characters."""
    assert scaffold.trigger_name(service, event_type) == trigger
    assert scaffold.name_problem(trigger) is None


@pytest.mark.parametrize("event_type", ["", "   ", " padded", "new\nline", "tab\t"])
def test_bad_event_types(event_type: str) -> None:
    """Empty, padded or control-character types are refused."""
    assert scaffold.event_type_problem(event_type) is not None


def test_long_python_string_is_split_into_pieces() -> None:
    """A long value becomes implicitly concatenated literals that evaluate to it."""
    text = 'com.example."quoted".' + "x" * 200
    literal = scaffold.python_string(text)
    assert len(literal.splitlines()) == 3
    assert ast.literal_eval("(" + literal + ")") == text


# ---- kustomization text edits -----------------------------------------------------------------


def test_add_resource_goes_after_its_siblings_and_keeps_comments() -> None:
    """A Service goes after the last service-*, a Trigger after the last trigger-*; comments,
    order and everything else stay."""
    text = scaffold.add_resource(KUSTOMIZATION, "service-new.yaml", "service-")
    text = scaffold.add_resource(text, "trigger-new.yaml", "trigger-")
    lines = text.splitlines()
    assert lines[lines.index("  - service-query.yaml") + 1] == "  - service-new.yaml"
    assert lines[lines.index("  - trigger-a.yaml") + 1] == "  - trigger-new.yaml"
    assert [x for x in lines if x not in ("  - service-new.yaml", "  - trigger-new.yaml")] == (
        KUSTOMIZATION.splitlines()
    )


def test_add_resource_without_siblings_appends_even_without_final_newline() -> None:
    """With no item of the prefix, the entry goes last; a missing final newline is handled."""
    text = scaffold.add_resource(KUSTOMIZATION, "pingsource-x.yaml", "pingsource-")
    assert yaml.safe_load(text)["resources"][-2:] == ["job-migrate.yaml", "pingsource-x.yaml"]


def test_add_resource_refuses_flow_style_and_missing_list() -> None:
    """A flow-style list or no resources: cannot be edited as text: the error says so."""
    with pytest.raises(EditError):
        scaffold.add_resource("resources: [a.yaml, b.yaml]\n", "c.yaml", "c")
    with pytest.raises(EditError):
        scaffold.add_resource("kind: Kustomization\n", "c.yaml", "c")


def test_add_image_copies_the_shape_of_the_last_function_image() -> None:
    """The new entry copies the last knfn/* entry (newName prefix, placeholder digest) and goes
    right after it; other entries and comments are untouched."""
    text = scaffold.add_image(OVERLAY, "knfn/welcome")
    images = yaml.safe_load(text)["images"]
    assert [i["name"] for i in images] == [
        "knfn/hello",
        "knfn/query",
        "knfn/welcome",
        "quay.io/minio/minio",
    ]
    assert images[2] == {
        "name": "knfn/welcome",
        "newName": "registry.example.com/knfn/welcome",
        "digest": "sha256:0000",
    }
    assert "# Images: comment kept." in text


def test_add_image_skips_overlays_without_function_images_or_with_this_one() -> None:
    """No knfn/* image to copy, or the image mapped already: NoSiblings (left as it is)."""
    with pytest.raises(NoSiblings):
        scaffold.add_image("resources:\n  - ../../base\n", "knfn/x")
    with pytest.raises(NoSiblings):
        scaffold.add_image(OVERLAY, "knfn/query")


def test_repository_overlays_get_the_image(project: Path) -> None:
    """Both of the repository's overlays map a new function's image like the others'."""
    plan = scaffold.plan(project, "welcome", "http")
    dev = yaml.safe_load(plan.changed[Path("knative/overlays/dev/kustomization.yaml")])
    prod = yaml.safe_load(plan.changed[Path("knative/overlays/prod/kustomization.yaml")])
    assert {"name": "knfn/welcome", "newName": "dev.local/knfn/welcome", "newTag": "dev"} in (
        dev["images"]
    )
    assert any(
        i["name"] == "knfn/welcome" and i["digest"].startswith("sha256:") for i in prod["images"]
    )


# ---- the plan ---------------------------------------------------------------------------------


def test_http_plan_files(project: Path) -> None:
    """An HTTP function: four files in its folder, a Service, and the three kustomizations
    edited, the base one last (so a watcher sees the Service once its files exist)."""
    plan = scaffold.plan(project, "welcome", "http")
    assert sorted(map(str, plan.created)) == [
        "functions/welcome/README.md",
        "functions/welcome/main.py",
        "functions/welcome/requirements.txt",
        "functions/welcome/tests/test_welcome.py",
        "knative/base/service-welcome.yaml",
    ]
    assert list(plan.changed)[-1] == Path("knative/base/kustomization.yaml")
    service = yaml.safe_load(plan.created[Path("knative/base/service-welcome.yaml")])
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "knfn/welcome:dev"
    assert {"name": "FUNCTION_TARGET", "value": "welcome"} in container["env"]
    assert "def welcome(request" in plan.created[Path("functions/welcome/main.py")]
    assert (plan.event_type, plan.trigger) == (None, None)


def test_cloudevent_plan_has_a_trigger_on_the_chosen_type(project: Path) -> None:
    """A consumer gets a Trigger on the default broker filtering on --type, subscribing it;
    the hyphenated name becomes an underscored Python target."""
    plan = scaffold.plan(project, "order-audit", "cloudevent", "com.example.order.created")
    trigger = yaml.safe_load(
        plan.created[Path("knative/base/trigger-order-audit-order-created.yaml")]
    )
    assert trigger["spec"] == {
        "broker": "default",
        "filter": {"attributes": {"type": "com.example.order.created"}},
        "subscriber": {
            "ref": {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": "order-audit",
            }
        },
    }
    main = plan.created[Path("functions/order-audit/main.py")]
    assert "def order_audit(event: CloudEvent)" in main
    listed = yaml.safe_load(plan.changed[Path("knative/base/kustomization.yaml")])["resources"]
    assert {"service-order-audit.yaml", "trigger-order-audit-order-created.yaml"} <= set(listed)


def test_cloudevent_default_type(project: Path) -> None:
    """Without --type the Trigger filters on dev.knfn.<name>.requested."""
    plan = scaffold.plan(project, "pinger", "cloudevent")
    assert (plan.event_type, plan.trigger) == ("dev.knfn.pinger.requested", "pinger-requested")


def test_requirements_pin_what_the_repository_functions_pin(project: Path) -> None:
    """The new requirements.txt pins exactly the packages and versions hello pins."""

    def pins(text: str) -> list[str]:
        return [x for x in text.splitlines() if x and not x.startswith("#")]

    plan = scaffold.plan(project, "welcome", "http")
    made = plan.created[Path("functions/welcome/requirements.txt")]
    assert pins(made) == pins((REPO / "functions/hello/requirements.txt").read_text())


@pytest.mark.parametrize(
    ("name", "template", "event_type", "fragment"),
    [
        ("hello", "http", None, "already exists"),
        ("kit", "http", None, "already exists"),
        ("Bad", "http", None, "DNS-1035"),
        ("ok", "grpc", None, "choose one of http, cloudevent"),
        ("ok", "http", "a.b", "only with cloudevent"),
        ("ok", "cloudevent", " ", "must not be empty"),
    ],
)
def test_plan_refusals(
    project: Path, name: str, template: str, event_type: str | None, fragment: str
) -> None:
    """Taken or invalid names, unknown templates and misplaced or empty types are refused
    with exit code 2 and the reason."""
    with pytest.raises(ScaffoldError, match=fragment) as caught:
        scaffold.plan(project, name, template, event_type)
    assert caught.value.exit_code == 2


def test_a_service_defined_without_its_folder_is_taken(project: Path) -> None:
    """A listed manifest already defining the Knative Service refuses the name."""
    shutil.rmtree(project / "functions" / "query")
    with pytest.raises(ScaffoldError, match="already defines Knative Service query"):
        scaffold.plan(project, "query", "http")


def test_not_a_project_is_refused(tmp_path: Path) -> None:
    """Without knative/base/kustomization.yaml there is nothing to register in."""
    with pytest.raises(ScaffoldError, match=r"is .* a knfn project"):
        scaffold.plan(tmp_path, "welcome", "http")


def test_write_creates_files_and_never_overwrites(project: Path) -> None:
    """write makes every planned file; a plan made before someone else created one of its
    files fails and removes what it had made, leaving the kustomization as it was."""
    plan = scaffold.plan(project, "welcome", "http")
    other = scaffold.plan(project, "second", "http")
    written = scaffold.write(project, plan)
    assert set(written) == set(plan.created) | set(plan.changed)
    assert (project / "functions/welcome/tests/test_welcome.py").is_file()

    before = (project / "knative/base/kustomization.yaml").read_text()
    (project / "functions/second").mkdir()
    (project / "functions/second/main.py").write_text("# someone else's\n")
    with pytest.raises(ScaffoldError, match="could not write"):
        scaffold.write(project, other)
    assert (project / "functions/second/main.py").read_text() == "# someone else's\n"
    assert not (project / "functions/second/README.md").exists()
    assert (project / "knative/base/kustomization.yaml").read_text() == before


def test_longest_name_and_type_still_pass_the_linter(project: Path) -> None:
    """With a 63-character name and a 200-character type the generated Python passes ruff
    check and ruff format --check under the project's settings."""
    assert RUFF.is_file(), f"{RUFF} missing: run `make setup`"
    long_name = "a" + "b-c" * 20 + "de"
    names = [long_name, "z" * 63]
    scaffold.write(project, scaffold.plan(project, long_name, "http"))
    scaffold.write(project, scaffold.plan(project, "z" * 63, "cloudevent", "t." * 100))
    folders = [f"functions/{n}" for n in names]
    for argv in ([str(RUFF), "check", *folders], [str(RUFF), "format", "--check", *folders]):
        done = subprocess.run(argv, capture_output=True, text=True, cwd=project, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

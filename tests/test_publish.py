"""How the book reaches its readers: CI workflows, Pages, make lab, install instructions."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO = CONFIG["repository"]["url"].rstrip("/")


def workflow(name):
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))          # YAML 1.1 reads the key `on` as True
    return wf


def steps(job):
    return [s.get("run", "") + " " + s.get("uses", "") for s in job["steps"]]


def test_the_test_workflow_runs_make_test_on_push_and_pull_requests():
    wf = workflow("test.yml")
    assert "push" in wf["on"] and "pull_request" in wf["on"]
    (job,) = wf["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    setup = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python")]
    assert setup and str(setup[0]["with"]["python-version"]) == "3.11"
    assert any(re.fullmatch(r"make test", s.get("run", "").strip()) for s in job["steps"])


def test_the_book_workflow_publishes_the_build_from_main():
    wf = workflow("book.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert any(s.strip() == "make book" for s in steps(build))
    upload = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and any("actions/deploy-pages" in s for s in steps(deploy))


def test_the_preface_links_the_rendered_book_at_the_configured_address():
    owner, name = REPO.split("github.com/")[1].split("/")[:2]
    url = f"https://{owner.lower()}.github.io/{name}/"
    assert url in (ROOT / "book" / "preface.md").read_text()
    assert url in (ROOT / "README.md").read_text()


def test_setup_never_says_a_bare_pip_install_torch():
    for path in ("book/setup.md", "README.md"):
        for line in (ROOT / path).read_text().splitlines():
            if re.search(r"pip install\s+(\"|')?torch\b", line):
                assert "--index-url" in line, f"{path}: a bare 'pip install torch': {line.strip()}"


def test_make_lab_and_its_jupyterlab():
    make = (ROOT / "Makefile").read_text()
    lab = make.split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert "env" in lab.splitlines()[0] and "jupyter lab" in lab and "pip install" in lab
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("jupyterlab") for d in extras["book"])
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "repository.url" in readme and "pip wheel" in readme

""".github/workflows: valid against GitHub's workflow schema (check-jsonschema's vendored, offline
copy), running the commands the README and tox.ini document, and keeping the rules zizmor (GitHub Actions'
security linter, run by `tox -e lint`) audits: actions pinned to a commit, no persisted checkout credentials, no
`${{ }}` expression inside a `run:` script."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
NIGHTLY_COMMAND = ('pytest bench -m "$TIER" --extended --cache-remote-required --benchmark-save="nightly-$GITHUB_SHA" '
                   '--benchmark-compare="$PREVIOUS_ID"')
ARTIFACTS_COMMAND = "pytest bench -m cpu --extended -n auto --cache-remote-mode rw --cache-remote-required"
NIGHTLY_VERDICT = 'python -m reports compare "$PREVIOUS" "nightly-$GITHUB_SHA"'
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")  # owner/repo[/path]@<full commit SHA>
USES_LINE = re.compile(r"^\s*(?:- )?uses:\s*(?P<ref>\S+)(?P<rest>.*)$", re.M)


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, paths)], capture_output=True, text=True, timeout=120)


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def run_lines(workflow: dict) -> list[str]:
    return [line.strip() for job in workflow["jobs"].values() for step in job["steps"]
            for line in step.get("run", "").splitlines() if line.strip()]


def hazards(text: str) -> list[str]:
    """What a workflow's text breaks of the three rules: an action referenced by a tag or branch instead of a full
    commit SHA (or without its tag in a comment), a checkout that keeps its credentials in .git/config, a `${{ }}`
    expression inside a `run:` script (the shell would run what it expands to, so values go through `env:`)."""
    found = []
    for match in USES_LINE.finditer(text):
        ref = match["ref"]
        if ref.startswith(("./", "docker://")):
            continue
        if not PINNED.match(ref):
            found.append(f"not pinned to a commit SHA: {ref}")
        elif not re.match(r"\s+#\s*v\d", match["rest"]):
            found.append(f"pinned without its tag in a comment: {ref}")
    workflow = yaml.safe_load(text)
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@") and \
                    (step.get("with") or {}).get("persist-credentials") is not False:
                found.append(f"{job_id}: checkout without persist-credentials: false")
            if "${{" in step.get("run", ""):
                found.append(f"{job_id}: ${{{{ }}}} inside run: {step.get('name') or step['run'][:60]}")
    return found


def zizmor() -> str | None:
    beside = Path(sys.executable).with_name("zizmor")
    return str(beside) if beside.exists() else shutil.which("zizmor")


def test_every_workflow_passes_the_github_workflow_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "docs.yml", "nightly-gpu.yml"]
    out = check_jsonschema(*files)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("mutate, complaint", [
    (lambda text: text.replace("    runs-on: ubuntu-latest\n", ""), "runs-on"),  # a job without a runner
    (lambda text: text.replace("  pull_request:\n", "  pull-request:\n"), "pull-request"),  # unknown event
    (lambda text: text.replace("timeout-minutes: 60", "timeout-minutes: soon"), "soon"),
])
def test_schema_rejects_a_broken_workflow(tmp_path, mutate, complaint):
    broken = tmp_path / "ci.yml"
    original = (WORKFLOWS / "ci.yml").read_text()
    broken.write_text(mutate(original))
    assert broken.read_text() != original
    out = check_jsonschema(broken)
    assert out.returncode == 1 and "Schema validation errors were encountered" in out.stdout + out.stderr
    assert complaint in out.stdout + out.stderr


def test_ci_runs_on_push_and_pull_request_the_readme_test_command():
    ci = load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    assert ".ci/run" in run_lines(ci)
    ci_run = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_run[-1] == ".ci-venv/bin/tox"  # .ci/run ends in the README's test command
    readme = (ROOT / "README.md").read_text()
    # command 2 installs tox as .ci/run does, then runs it
    installed = re.search(r"\.ci-venv/bin/pip install --quiet \"(tox[^\"]*)\"", "\n".join(ci_run))
    assert installed and re.search(r"# 2\. The tests \(what CI runs: .*\)\npip install '" + re.escape(installed[1])
                                   + r"' && tox\n", readme)
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert tox["testenv"]["commands"].split() == ["pytest", "{posargs}", "pytest", "bench", "-m", "smoke"]


def test_nightly_gpu_job():
    nightly = load("nightly-gpu.yml")
    assert set(nightly["on"]) == {"schedule", "workflow_dispatch"} and nightly["on"]["schedule"][0]["cron"]
    job = nightly["jobs"]["bench"]
    matrix = {entry["tier"]: entry for entry in job["strategy"]["matrix"]["include"]}
    assert set(matrix) == {"t4", "legacy_gpu"} and job["runs-on"] == "${{ matrix.runner }}"
    for tier, entry in matrix.items():
        assert "self-hosted" in entry["runner"] and tier in entry["runner"]
        assert entry["torch_index"].startswith("https://download.pytorch.org/whl/cu")  # a CUDA build of torch
    lines = run_lines(nightly)
    assert NIGHTLY_COMMAND in lines
    first_night = NIGHTLY_COMMAND.removesuffix(' --benchmark-compare="$PREVIOUS_ID"')
    assert first_night in lines  # the first night has nothing to compare with
    # the benchmark step compares with the previous night's run (by its number) and re-times what it
    # flags at the end of its session; the verdict lists everything, even after a failed benchmark step
    verdict = next(s for s in job["steps"] if s.get("run") == NIGHTLY_VERDICT)
    assert verdict["if"] == "${{ !cancelled() && steps.stored.outputs.found == 'true' }}"
    # tonight compares with the last full nightly run, never with another kind of run
    stored = next(s for s in job["steps"] if s.get("id") == "stored")
    assert ".benchmarks/*/*_nightly-*.json" in stored["run"] and ".benchmarks/*/*.json" not in stored["run"]
    assert 'echo "previous_id=$(basename "$previous" | cut -d_ -f1)"' in stored["run"]
    steps = {step.get("name", ""): step for step in job["steps"]}
    compared = next(s for s in job["steps"] if s.get("run") == NIGHTLY_COMMAND)
    alone = next(s for s in job["steps"] if s.get("run") == first_night)
    assert (
        compared["if"] == "steps.stored.outputs.found == 'true'"
        and alone["if"] == "steps.stored.outputs.found == 'false'"
    )
    uses = [step.get("uses", "") for step in job["steps"]]
    restore = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/restore"))
    save = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/save"))
    assert restore["with"]["path"] == save["with"]["path"] == ".benchmarks"
    assert restore["with"]["restore-keys"] == "nightly-benchmarks-${{ matrix.tier }}-"
    assert save["with"]["key"].startswith(restore["with"]["restore-keys"])
    assert uses.index(restore["uses"]) < uses.index(save["uses"])
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert (
        "nightly-${{ github.sha }}.json" in upload["with"]["path"] and "reports/out/nightly-" in upload["with"]["path"]
    )
    assert any(line.startswith("python -m reports build") for line in lines)
    assert 'python -m compressors.machine.hardware --require "$TIER"' in lines
    # the matrix and the steps' outputs reach the scripts through the environment, never expanded into them
    assert job["env"]["TIER"] == "${{ matrix.tier }}" and job["env"]["TORCH_INDEX"] == "${{ matrix.torch_index }}"
    assert compared["env"] == {"PREVIOUS_ID": "${{ steps.stored.outputs.previous_id }}"}
    assert verdict["env"] == {"PREVIOUS": "${{ steps.stored.outputs.previous }}"}
    assert any("pip install" in line and "torch==2.13.0" in line and '--index-url "$TORCH_INDEX"' in line
               for line in lines)
    assert all(name for name in steps if name != "") and len(steps) >= len(job["steps"]) - 2  # named, for the log


def test_nightly_fleet_builds_once_on_a_cpu_runner_then_each_tier_pulls():
    nightly = load("nightly-gpu.yml")
    assert nightly["env"]["COMPRESSBENCH_CACHE_REMOTE"] == "${{ vars.COMPRESSBENCH_CACHE_REMOTE }}"
    artifacts, bench = nightly["jobs"]["artifacts"], nightly["jobs"]["bench"]
    assert artifacts["runs-on"] == "ubuntu-latest" and "COMPRESSBENCH_CACHE_REMOTE" in artifacts["if"]
    assert ARTIFACTS_COMMAND in [line.strip() for s in artifacts["steps"] for line in s.get("run", "").splitlines()]
    assert bench["needs"] == "artifacts" and "needs.artifacts.result != 'failure'" in bench["if"]
    assert any(".[bench,remote]" in line for line in run_lines(nightly))


@pytest.mark.slow
def test_nightly_artifacts_arguments_are_accepted_by_the_suite(tmp_path):
    args = ARTIFACTS_COMMAND.split()[1:]
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "--collect-only", "-q",
                          "--models", "minilm-sst2", "--techniques", "fp32", "--cache-remote",
                          f"file://{tmp_path / 'bucket'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_nightly_pytest_arguments_are_accepted_by_the_suite(tmp_path, monkeypatch):
    """The nightly's command line, with a tier this machine has, collects without a usage error."""
    for name, value in {"TIER": "cpu", "GITHUB_SHA": "abc123", "PREVIOUS_ID": "0001"}.items():
        monkeypatch.setenv(name, value)
    args = shlex.split(os.path.expandvars(NIGHTLY_COMMAND))[1:]
    assert "$" not in " ".join(args) and "nightly-abc123" in " ".join(args)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *args,
            "--collect-only",
            "-q",
            "--benchmark-storage",
            str(tmp_path),
            "--models",
            "minilm-sst2",
            "--techniques",
            "fp32",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "minilm-sst2-fp32-cpu-bs32" in out.stdout


def test_the_docs_build_is_strict_part_of_tox_and_lists_every_page_and_decision_record():
    """The reference site fails its build on a broken link or anchor, or on a page left out of the navigation;
    tox (what CI runs) builds it. The same page sets are checked here, in seconds, with pytest."""

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert "docs" in [e.strip() for e in tox["tox"]["env_list"].split(",")]
    assert "mkdocs build --strict" in tox["testenv:docs"]["commands"]
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True and config["theme"]["name"] == "material"
    assert config["validation"]["nav"]["omitted_files"] == "warn"
    assert config["validation"]["links"]["not_found"] == config["validation"]["links"]["anchors"] == "warn"

    def flatten(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from flatten(value) if isinstance(value, list) else [value]

    nav = set(flatten(config["nav"]))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    records = {page for page in pages if page.startswith("decisions/")}
    assert len(records) >= 10 and "decisions/README.md" in records  # the records are ordinary pages under docs/
    assert "hooks" not in config  # nothing is copied in at build time: GitHub shows the same files
    assert nav == pages, f"missing from nav: {sorted(pages - nav)}; in nav without a file: {sorted(nav - pages)}"


def test_the_docs_tools_install_without_the_suite():
    """tox -e docs (and whoever builds the site) installs docs/requirements.txt: mkdocs without torch. It is
    the same requirement as the `docs` extra, which installs the package too."""
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert tox["testenv:docs"]["package"] == "skip" and tox["testenv:docs"]["deps"] == "-r docs/requirements.txt"
    wanted = [line for line in (ROOT / "docs" / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert wanted == pyproject["project"]["optional-dependencies"]["docs"]
    assert not any(name in line for line in wanted for name in ("torch", "compressbench", "transformers"))


@pytest.mark.parametrize("name", ["ci.yml", "docs.yml", "nightly-gpu.yml"])
def test_workflow_pins_actions_to_commits_keeps_no_credentials_and_expands_nothing_in_scripts(name):
    assert hazards((WORKFLOWS / name).read_text()) == []


@pytest.mark.parametrize("mutate, complaint", [
    (lambda text: re.sub(r"actions/setup-python@[0-9a-f]{40} # v[\d.]+", "actions/setup-python@v5", text),
     "not pinned to a commit SHA: actions/setup-python@v5"),
    (lambda text: re.sub(r"(actions/setup-python@[0-9a-f]{40}) # v[\d.]+", r"\1", text),
     "pinned without its tag in a comment"),
    (lambda text: text.replace("persist-credentials: false", "persist-credentials: true"),
     "checkout without persist-credentials: false"),
    (lambda text: text.replace('--require "$TIER"', "--require ${{ matrix.tier }}"), "${{ }} inside run"),
])
def test_hazards_finds_a_tag_reference_persisted_credentials_and_an_expansion_in_a_script(mutate, complaint):
    original = (WORKFLOWS / "nightly-gpu.yml").read_text()
    broken = mutate(original)
    assert broken != original
    assert any(complaint in finding for finding in hazards(broken)), hazards(broken)


def test_lint_runs_zizmor_offline_failing_at_medium_severity():
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    lint = tox["testenv:lint"]
    assert "lint" in [e.strip() for e in tox["tox"]["env_list"].split(",")]
    assert any(dep.strip().startswith("zizmor") for dep in lint["deps"].splitlines())
    commands = [line.strip() for line in lint["commands"].splitlines() if line.strip()]
    assert "zizmor --offline --min-severity medium .github/workflows/" in commands


@pytest.mark.skipif(zizmor() is None, reason="zizmor is not installed (it is in the test extra and tox -e lint)")
def test_zizmor_passes_the_workflows_and_fails_a_script_expanding_pull_request_text(tmp_path):
    command = [zizmor(), "--offline", "--min-severity", "medium", "--no-progress"]
    clean = subprocess.run([*command, str(WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    # what the rules prevent: a pull request's title expanded into a script runs as code
    (tmp_path / "ci.yml").write_text((WORKFLOWS / "ci.yml").read_text().replace(
        "        run: .ci/run\n", '        run: .ci/run "${{ github.event.pull_request.title }}"\n'))
    broken = subprocess.run([*command, str(tmp_path / "ci.yml")], capture_output=True, text=True, timeout=120)
    assert broken.returncode != 0 and "template-injection" in broken.stdout + broken.stderr


def test_the_site_is_built_strictly_and_deployed_from_main_by_the_only_job_that_may_write():
    docs = load("docs.yml")
    assert docs["on"]["push"]["branches"] == ["main"] and docs["permissions"] == {"contents": "read"}
    build, deploy = docs["jobs"]["build"], docs["jobs"]["deploy"]
    assert "permissions" not in build  # the workflow's read-only token
    assert "mkdocs build --strict --site-dir site" in run_lines(docs)
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    docs_deps = tox["testenv:docs"]["deps"].strip()
    assert f"pip install --quiet {docs_deps}" in run_lines(docs)  # what tox -e docs builds with
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "site"
    assert deploy["needs"] == "build" and deploy["if"] == "github.ref == 'refs/heads/main'"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/configure-pages", "actions/deploy-pages"]
    assert deploy["environment"]["name"] == "github-pages"
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["site_url"].startswith("https://") and config["repo_url"].startswith("https://")
    assert config["site_url"] in (ROOT / "README.md").read_text()  # the README links the published site

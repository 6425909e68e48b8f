"""Every ``python`` block of README.md and docs/ runs, as written, with tiny env settings added.

Each block runs in a fresh namespace (so every block carries its own imports, as a reader copying one needs), in
a temporary working folder. The only edits are the :data:`EDITS` below: each must match some block, so that a
docs change that drops one fails here instead of silently running the full-size settings.

A block may carry a marker, an HTML comment on the line before its fence (invisible on GitHub and in the site):
- ``<!-- test: script -->``: the block is written to a file and run as ``python file.py`` in a subprocess, so that
  what a reader's script meets is tested: spawn-started workers import the file again, and only an
  ``if __name__ == "__main__":`` guard keeps them from running it. A block that starts workers with ``spawn``
  (``SubprocVecEnv``, ``AsyncVectorEnv``, ``forkserver``) must be a script.
- ``<!-- test: skip: <reason> -->``: not run; the reason is shown as the skip reason.
Blocks that import torchrl, tianshou or ray are skipped where those are not installed (.ci/run runs them: the
torchrl and tianshou extras after the base suite, ``-k rllib`` in the Ray venv).
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium
import pytest

from tailmix.envs import CENTRAL_ID

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: A random encoder (no fit), a small pool, 3-step episodes.
TINY = dict(encoder="random", pool_size=16, max_steps=3)
PPO_TINY = dict(n_steps=32, batch_size=32, n_epochs=1, seed=0)
EDITS = [
    ('{"dataset": "digits"}', '{"dataset": "digits", **TINY}'),
    ('dataset="digits"', 'dataset="digits", **TINY'),
    # the suite's task ids (docs/suite.md): the task's recipe with the tiny settings on top
    ('make("tailmix/KnownAnswerCentral-v0")', 'make("tailmix/KnownAnswerCentral-v0", **TINY)'),
    ('make("parallel", "tailmix/KnownAnswer-v0")', 'make("parallel", "tailmix/KnownAnswer-v0", **TINY)'),
    ('PPO("MlpPolicy", ', 'PPO("MlpPolicy", **PPO_TINY, env='),
    (".learn(2_000)", ".learn(64)"),
    # the spawn-started SB3 workers: the docs pass no env_kwargs there (the default env)
    ('vec_env_kwargs={"start_method": "spawn"})', 'vec_env_kwargs={"start_method": "spawn"}, env_kwargs=TINY)'),
    # RLlib: SB3-sized batches, one epoch, sampling in the driver
    ("config.build_algo()", "config.training(train_batch_size_per_learner=30, minibatch_size=30, num_epochs=1)"
                            ".env_runners(num_env_runners=0).build_algo()"),
    ("total_timesteps=20_000, num_env_runners=4", "total_timesteps=60, num_env_runners=0"),
    # Tianshou: one short epoch
    ("max_epochs=10, epoch_num_steps=2_000", "max_epochs=1, epoch_num_steps=24"),
    ("collection_step_num_env_steps=200, batch_size=64, test_step_num_episodes=5",
     "collection_step_num_env_steps=12, batch_size=12, test_step_num_episodes=1"),
]
MARKER = re.compile(r"<!-- test: (?P<marker>.*?) -->\n```python\n")
FENCE = re.compile(r"^```python\n(?P<code>.*?)^```", re.S | re.M)
STARTS_WORKERS = ("spawn", "forkserver", "SubprocVecEnv", "AsyncVectorEnv")


@dataclasses.dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    index: int  # 1-based, among the page's python blocks
    code: str
    marker: str | None  # "script", "skip: <reason>" or None

    @property
    def needs(self) -> str | None:
        if "torchrl" in self.code:
            return "torchrl"
        if "tianshou" in self.code:
            return "tianshou"
        if re.search(r"^\s*(from|import) ray\b|tailmix\.agents\.rllib|ray_pool", self.code, re.M):
            return "rllib"
        return None

    @property
    def id(self) -> str:
        stem = self.page.removeprefix("docs/").removesuffix(".md").replace("/", "-")
        return "-".join(filter(None, (f"{stem}{self.index}", self.needs, "script" if self.script else None)))

    @property
    def script(self) -> bool:
        return self.marker == "script"


def _blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for i, m in enumerate(FENCE.finditer(text), 1):
            before = MARKER.search(text, max(0, m.start() - 200), m.end())
            marker = before["marker"].strip() if before and before.end() == m.start() + len("```python\n") else None
            blocks.append(Block(str(page.relative_to(ROOT)), i, m["code"], marker))
    return blocks


BLOCKS = _blocks()


def _edited(code: str) -> str:
    for old, new in EDITS:
        code = code.replace(old, new)
    return code


def test_the_docs_have_their_snippets_and_every_edit_applies():
    pages = {b.page for b in BLOCKS}
    assert {"README.md", "docs/integrations.md", "docs/datasets.md", "docs/generators.md"} <= pages
    for old, _ in EDITS:
        assert any(old in b.code for b in BLOCKS), f"no docs snippet contains {old!r} any more; update EDITS"
    # issue 26 item 14: the SB3 and AsyncVectorEnv snippets run as scripts, so their __main__ guard is tested
    scripts = [b for b in BLOCKS if b.script]
    assert any("SubprocVecEnv" in b.code for b in scripts) and any("AsyncVectorEnv" in b.code for b in scripts)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_markers_are_known_and_worker_snippets_are_scripts(block):
    assert block.marker in (None, "script") or re.fullmatch(r"skip: \S.*", block.marker), (
        f"{block.page} block {block.index}: unknown marker {block.marker!r}; use 'script' or 'skip: <reason>'")
    if any(word in block.code for word in STARTS_WORKERS):
        assert block.script, (f"{block.page} block {block.index} starts worker processes: mark it <!-- test: script "
                              "--> so that it runs as a file, as a reader's script would")
    if block.script:
        assert 'if __name__ == "__main__":' in block.code, (
            f"{block.page} block {block.index} runs as a script but has no __main__ guard: spawn-started workers "
            "import the file again and would run it")
    if re.search(r'"tailmix/\w+-v\d"', block.code) and not block.marker:
        # the test registers nothing for a block: it must import tailmix itself, as a reader's script must
        assert re.search(r"^import .*\btailmix\b|^from tailmix", block.code, re.M), (
            f"{block.page} block {block.index} makes a tailmix id without importing tailmix (which registers them)")


def _requirements(block: Block, request) -> None:
    if block.marker and block.marker.startswith("skip:"):
        pytest.skip(block.marker.removeprefix("skip:").strip())
    if block.needs == "torchrl":
        pytest.importorskip("torchrl", reason='torchrl is not installed (pip install -e ".[torchrl]")')
    if block.needs == "tianshou":
        pytest.importorskip("tianshou", reason='tianshou is not installed (pip install -e ".[tianshou]")')
    if block.needs == "rllib":
        pytest.importorskip("ray.rllib", reason='the ray extra is not installed (pip install -e ".[ray]")')
        request.getfixturevalue("local_ray")


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024**2)
    yield
    if started:
        ray.shutdown()


def _marks(block: Block) -> list:
    return [pytest.mark.slow] if block.script or block.needs in ("rllib", "tianshou") else []


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=_marks(b)) for b in BLOCKS if not b.script])
def test_docs_snippet_runs(block, monkeypatch, request, tmp_path):
    _requirements(block, request)
    # SB3's one-liner passes only the id: the registered spec carries the tiny settings (in this process)
    spec = gymnasium.spec(CENTRAL_ID)
    monkeypatch.setitem(gymnasium.registry, CENTRAL_ID, dataclasses.replace(spec, kwargs={**spec.kwargs, **TINY}))
    monkeypatch.chdir(tmp_path)  # what a snippet writes (run folders, banks) lands here
    from tailmix.generators.base import GENERATOR_KINDS

    # a kind a snippet registers (docs/generators.md) stays out of the later tests
    monkeypatch.setattr(GENERATOR_KINDS, "_targets", dict(GENERATOR_KINDS._targets))
    namespace = {"TINY": TINY, "PPO_TINY": PPO_TINY, "__name__": "__main__"}
    try:
        exec(compile(_edited(block.code), f"{block.page} (python block {block.index})", "exec"), namespace)
        if "model" in namespace:
            assert namespace["model"].num_timesteps >= 64
        if "rollout" in namespace:
            assert namespace["rollout"].batch_size[-1] == 10
        if "result" in namespace and block.needs == "rllib":
            assert namespace["result"]["training_iteration"] == 1
    finally:
        for key in ("venv", "env", "envs"):
            if hasattr(namespace.get(key), "close"):
                namespace[key].close()
        if "algo" in namespace:
            namespace["algo"].stop()


# Runs first in the script and in every worker that imports it again (as __mp_main__): only the settings.
SCRIPT_PRELUDE = f"TINY = {TINY!r}\nPPO_TINY = {PPO_TINY!r}\n"
# Runs last, in the main process only: the guarded body ran (a guard that is never true would run nothing).
SCRIPT_EPILOGUE = textwrap.dedent("""
    if __name__ == "__main__":
        assert "venv" in globals() or "model" in globals(), "the __main__ body of the snippet did not run"
        if "model" in globals():
            assert model.num_timesteps >= 64
        print("snippet ran")
""")
# The one-liner's registered id, with the tiny settings, in the main process only (workers get env_kwargs=TINY
# through the edits; the snippet's own `import tailmix` is what registers the ids there).
SCRIPT_REGISTRY = textwrap.dedent(f"""
    if __name__ == "__main__":
        import dataclasses as _dataclasses, gymnasium as _gymnasium
        try:
            _spec = _gymnasium.spec({CENTRAL_ID!r})
        except _gymnasium.error.Error:
            pass  # the snippet does not import tailmix: it makes no registered id
        else:
            _gymnasium.registry[_spec.id] = _dataclasses.replace(_spec, kwargs={{**_spec.kwargs, **TINY}})
""")


def _script(code: str) -> str:
    """The snippet as a file: the settings, the snippet with the registry patch after its imports, a check."""
    lines = _edited(code).splitlines()
    first_code = next(i for i, line in enumerate(lines)
                      if line.strip() and not line.startswith(("import ", "from ", "#")))
    return "\n".join([SCRIPT_PRELUDE, *lines[:first_code], SCRIPT_REGISTRY, *lines[first_code:], SCRIPT_EPILOGUE])


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.script], ids=lambda b: b.id)
def test_docs_snippet_runs_as_a_script(block, request, tmp_path):
    """``python snippet.py``, as a reader saves and runs it: spawn-started workers import the file again."""
    _requirements(block, request)
    path = tmp_path / "snippet.py"
    path.write_text(_script(block.code), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "snippet ran" in proc.stdout, (
        f"{block.page} block {block.index} failed as a script (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.mark.slow
def test_an_unguarded_spawn_snippet_fails_as_a_script(tmp_path):
    """The check above can fail: the README's old AsyncVectorEnv snippet (no guard) dies as a script."""
    old = textwrap.dedent("""
        import functools, gymnasium
        from tailmix.envs.central import SyntheticRatioCentralEnv

        venv = gymnasium.vector.AsyncVectorEnv([functools.partial(SyntheticRatioCentralEnv, dataset="digits")] * 2,
                                               context="spawn")
    """)
    path = tmp_path / "snippet.py"
    path.write_text(SCRIPT_PRELUDE + _edited(old) + "venv.close()\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "bootstrapping phase" in proc.stderr


# -- the docs' prose ----------------------------------------------------------------------------------------------

def _install_commands(text: str) -> list[str]:
    return re.findall(r"^python3 -m venv \.venv .*$", text, re.M)


def test_the_readme_test_command_is_what_ci_runs():
    """README command 2 (install, then the tests) is .ci/run's, less its quiet flags and cache option."""
    readme = _install_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(readme) == 2, "the README keeps exactly two fresh-machine commands"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_line = next(line for line in ci.splitlines() if line.startswith("pip install -q torch=="))
    ci_line = ci_line.replace("pip install -q ", "pip install ").replace(" -p no:cacheprovider", "")
    assert readme[1].endswith(ci_line), f"README: {readme[1]}\n.ci/run: {ci_line}"
    # the docs' install command is command 1's install part
    index = _install_commands((ROOT / "docs" / "index.md").read_text(encoding="utf-8"))
    assert index and readme[0].startswith(index[0] + " && ")


def _resolve(name: str):
    """The module or attribute a dotted name names (``tailmix.envs.vector.SyntheticRatioVectorEnv``), or None."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _clauses(text: str) -> list[str]:
    text = FENCE.sub("", text)
    return [c for c in re.split(r";|\.\s|\n\n", text) if "`" in c]


def test_names_the_docs_say_a_module_holds_are_there():
    """A clause naming one tailmix module and backticked calls (`f(...)`) names calls that module holds.

    The README once listed ``make_long_tail`` among ``tailmix.envs.datasets``' loaders (it is in
    ``tailmix.envs.longtail``): issue 25 item 5.
    """
    wrong = []
    for page in PAGES:
        for clause in _clauses(page.read_text(encoding="utf-8")):
            modules = set(re.findall(r"`(tailmix(?:\.\w+)+)`", clause))
            calls = set(re.findall(r"`(\w+)\(", clause))
            if len(modules) != 1 or not calls:
                continue
            module = _resolve(modules.pop())
            if not inspect.ismodule(module):
                continue
            wrong += [f"{page.relative_to(ROOT)}: {name} is not in {module.__name__}: {' '.join(clause.split())}"
                      for name in sorted(calls) if not hasattr(module, name)]
    assert not wrong, "\n".join(wrong)


def test_dotted_tailmix_names_in_the_docs_exist():
    """Every backticked ``tailmix.a.b`` in README.md and docs/ is a module or an attribute of one."""
    missing = []
    for page in PAGES:
        for name in sorted(set(re.findall(r"`(tailmix(?:\.\w+)+)`", FENCE.sub("", page.read_text("utf-8"))))):
            if _resolve(name) is None:
                missing.append(f"{page.relative_to(ROOT)}: {name}")
    assert not missing, "\n".join(missing)


def test_repository_paths_in_the_docs_exist():
    """Backticked paths to results and scripts (``benchmarks/<question>/x.md``, ``envs/oracle.py``) exist."""
    missing = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for path in sorted(set(re.findall(r"`((?:benchmarks|envs|agents|generators|classifiers|tailmix|tests)/"
                                          r"[\w./-]+\.(?:md|json|py))(?:::\w+)?`", text))):
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "\n".join(missing)


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_the_readme_links_resolve():
    """The README's relative links (docs pages, CHANGELOG.md) name files that exist (mkdocs checks docs/ itself)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets and all((ROOT / t).exists() for t in targets), [t for t in targets if not (ROOT / t).exists()]

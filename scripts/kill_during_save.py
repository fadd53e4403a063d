"""SIGKILL during checkpoint writing, round after round: the newest complete checkpoint loads and resumes.

Acceptance check: a tiny causal-LM run (2-layer, 32-wide GPT-2, character tokenizer, a generated
corpus) saves a checkpoint every 2 steps, so it spends a large share of its time writing one. Each
round starts `python -m ptft_cli pretrain ... --resume auto` as a subprocess, waits until the save
of a step 1-3 saves after the one it resumed from begins (a `.tmp-step-*` folder appears in
checkpoints/), waits a random 0 to 1.5x the median length of such saves (learned as it goes; a
process's first save is slower and learned apart), and sends SIGKILL. Then, with the process dead:

  - every visible `checkpoints/step-*` folder is complete (a half-written one never shows);
  - the newest complete checkpoint (`RunDir.latest_checkpoint()`) is at least the last save known to
    have finished before the kill, its marker, folder name and state.json agree on the step, and it
    loads: model.safetensors with `safetensors.torch.load_file`, the folder with
    `transformers.AutoModelForCausalLM.from_pretrained`, training_state.pt with
    `torch.load(weights_only=True)`, and ptft's own `checkpoint.read_checkpoint`;
  - the next round's process (`--resume auto`) says it resumed from exactly that checkpoint.

After the last round the run is finished with `--resume auto` and compared with an uninterrupted
run of the same config: the final weights must be bit-identical and every metrics.jsonl record equal
except the timing fields (samples/s, tokens/s, FLOP/s).

    .venv/bin/python scripts/kill_during_save.py [--rounds 20] [--streaming] [--seed 0] [--work DIR]

Figures: "killed N ms after the save of step S began" is the time from first seeing that save's
temporary folder (polled every 2 ms) to the kill. Where the kill landed is read from what the dead
process left behind: "inside the save of step S" a `.tmp-step-S-*` folder (it died between creating
the folder and renaming it into place; S can be a later save than the one that triggered the kill),
"while pruning" a `.trash-step-*` folder (it died deleting an older checkpoint), "between saves"
nothing (training steps, evaluation, or the instant after a rename). The final line counts the kills
whose newest complete checkpoint loaded and was resumed, and the kills that landed inside a save.
Exit status 1 if any check fails (the work folder is then kept for inspection).

The runs use OMP_NUM_THREADS=1 (`--threads`): on a busy 2-core machine two spin-waiting OpenMP
threads make this tiny model's steps 10-100x slower.

Measured on a 2-core CPU: the default 20 rounds take about 1.5 minutes (each round is mostly the
~3.5 s it takes a fresh process to import torch and start training), `--streaming` about the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_corpus import write_corpus  # noqa: E402

sys.path.insert(0, str(ROOT))

from ptft_cli.checkpoint import CHECKPOINT_MARKER, RunDir, is_complete, read_checkpoint  # noqa: E402

TIMING = ("samples_per_s", "tokens_per_s", "flops_per_s")  # the only fields allowed to differ
SAVE_EVERY = 2
POLL_S = 0.002  # polling every 0.5 ms slowed the run several-fold on 2 cores
TMP_STEP = re.compile(r"^\.tmp-step-(\d{8})-")
RESUMED = re.compile(r"from (\S*step-(\d{8})) \(step (\d+)")


def write_config(work: Path, *, streaming: bool, max_steps: int, keep: int) -> Path:
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    write_corpus(corpus / "a.txt", 1, paragraphs=150)
    write_corpus(corpus / "b.txt", 2, paragraphs=150)
    write_corpus(corpus / "valid.txt", 3, paragraphs=40)
    # a 32-block shuffle buffer over this ~31 KB corpus: the stream is read ~3 times in 200 steps,
    # so kills also land after an epoch rollover with a half-full buffer saved in the checkpoint
    stream = "  streaming: true\n  shuffle_buffer: 32\n" if streaming else ""
    path = work / "clm.yaml"
    path.write_text(
        f"""task: clm
output_dir: {work / "run"}
seed: 0
device: cpu
precision: fp32
model: {{architecture: gpt2, hidden_size: 32, num_layers: 2, num_heads: 2}}
tokenizer: {{type: char, max_length: 32}}
data:
  train: {corpus}/[ab].txt
  validation: {corpus / "valid.txt"}
  cache_dir: null
{stream}training:
  max_steps: {max_steps}
  batch_size: 16
  learning_rate: 3.0e-3
  warmup_steps: 5
  lr_scheduler: cosine
  eval_every: 25
  log_every: 5
  save_every: {SAVE_EVERY}
  keep_checkpoints: {keep}
""",
        encoding="utf-8",
    )
    return path


def launch(config: Path, output_dir: Path, log: Path, threads: int) -> subprocess.Popen:
    """`ptft pretrain --resume auto` in a fresh interpreter, its console (stderr) into `log`."""
    # one thread: the tiny model gains nothing from more, and on a busy machine OpenMP threads that
    # spin-wait for each other make steps 10-100x slower; every run here uses the same setting
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000", "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ptft_cli", "pretrain", "--config", str(config)]
    cmd += ["--set", f"output_dir={output_dir}", "--resume", "auto"]
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def resumed_from(log: Path) -> int | None:
    """The step the process said it resumed from (its header's `resume` row); None: started fresh."""
    m = RESUMED.search(log.read_text(encoding="utf-8", errors="replace"))
    return int(m.group(3)) if m else None


def tail(log: Path, n: int = 15) -> str:
    return "\n".join("    | " + line for line in log.read_text(errors="replace").splitlines()[-n:])


@dataclass
class Kill:
    round: int
    target: int = 0  # the kill waits for a save of this step or later
    save_step: int | None = None  # the save whose temporary folder triggered the kill
    after_ms: float = 0.0  # from first seeing that folder to the kill
    leftovers: list[str] = field(default_factory=list)  # .tmp-*/.trash-* left by the dead process
    latest: int | None = None  # newest complete checkpoint after the kill
    resumed: bool = False  # the next process resumed from `latest`
    problems: list[str] = field(default_factory=list)

    @property
    def inside_save(self) -> bool:
        return any(TMP_STEP.match(name) for name in self.leftovers)

    @property
    def while_pruning(self) -> bool:
        return any(name.startswith(".trash-") for name in self.leftovers)

    def where(self) -> str:
        for name in self.leftovers:
            if m := TMP_STEP.match(name):
                return f"inside the save of step {int(m.group(1))}"
        return "while pruning an old checkpoint" if self.while_pruning else "between saves"


class SaveWatcher:
    """Polls checkpoints/ for temporary save folders; learns how long a save takes. A process's
    first save is slower than the later ones (it imports and warms up what saving needs), so the
    two are learned apart."""

    def __init__(self, checkpoints: Path):
        self.checkpoints = checkpoints
        self.seen: dict[str, list[float]] = {}  # folder name -> [first seen, last seen]
        self.first: str | None = None  # the running process's first save
        self.lifetimes: dict[bool, list[float]] = {True: [], False: []}  # first save? -> lifetimes
        self.stale: set[str] = set()

    def _names(self) -> set[str]:
        try:
            return {n for n in os.listdir(self.checkpoints) if TMP_STEP.match(n)}
        except FileNotFoundError:
            return set()

    def start_round(self) -> None:
        """Before a process starts: the previous kill's leftover is no save of the new process."""
        self.stale, self.seen, self.first = self._names(), {}, None

    def poll(self) -> dict[str, float]:
        """Temporary save folders of the running process present now, with when each was first seen."""
        now = time.monotonic()
        names = self._names() - self.stale
        for name in list(self.seen):
            if name not in names:  # renamed into place: the save is over
                first, last = self.seen.pop(name)
                self.lifetimes[name == self.first].append(last - first)
        for name in sorted(names):
            if self.first is None:
                self.first = name
            self.seen.setdefault(name, [now, now])[1] = now
        return {name: times[0] for name, times in self.seen.items()}

    def max_delay(self, name: str) -> float:
        """1.5x the median of saves like this one (first seen to last seen), so most kills land inside."""
        seen = self.lifetimes[name == self.first]
        if len(seen) < 3:
            return 0.02
        return max(0.005, 1.5 * (statistics.median(seen) + POLL_S))


def kill_during_a_save(
    proc: subprocess.Popen, watcher: SaveWatcher, kill: Kill, rng: random.Random, timeout: float
) -> str | None:
    """SIGKILL `proc` a random moment after a save of step >= kill.target begins; an error otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"the process exited (status {proc.returncode}) before it could be killed"
        for name, first_seen in watcher.poll().items():
            step = int(TMP_STEP.match(name).group(1))  # type: ignore[union-attr]
            if step >= kill.target:
                time.sleep(rng.uniform(0.0, watcher.max_delay(name)))
                proc.send_signal(signal.SIGKILL)
                kill.after_ms = 1000 * (time.monotonic() - first_seen)
                proc.wait()
                kill.save_step = step
                return None
        time.sleep(POLL_S)
    proc.kill()
    proc.wait()
    return f"no save of step {kill.target} or later began within {timeout:.0f} s"


def check_checkpoints(run: RunDir, kill: Kill, resumed_at: int) -> None:
    """What a kill must never break; fills kill.latest and kill.problems."""
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    folder = run.checkpoints_dir
    kill.leftovers = sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".trash-")))
    if sum(1 for name in kill.leftovers if TMP_STEP.match(name)) > 1:  # saves never overlap
        kill.problems.append(f"more than one unfinished save: {kill.leftovers}")
    partial = [p.name for p in folder.glob("step-*") if not is_complete(p)]
    if partial:
        kill.problems.append(f"incomplete checkpoint folders are visible: {partial}")
    latest = run.latest_checkpoint()
    # saves run one after another: the one before the save that triggered the kill had finished
    finished = max(resumed_at, (kill.save_step or 0) - SAVE_EVERY)
    if latest is None:
        kill.problems.append(f"no complete checkpoint, though step {finished} had been saved")
        return
    kill.latest = int(latest.name.split("-")[1])
    if kill.latest < finished:
        kill.problems.append(f"newest complete checkpoint is step {kill.latest}; step {finished} was saved")
    try:
        marker = json.loads((latest / CHECKPOINT_MARKER).read_text(encoding="utf-8"))
        saved = read_checkpoint(latest)
        if not marker["step"] == saved.state["step"] == kill.latest:
            kill.problems.append(
                f"{latest.name}: marker says step {marker['step']}, state.json {saved.state['step']}"
            )
        weights = load_file(latest / "model.safetensors")
        model = AutoModelForCausalLM.from_pretrained(latest)
        for name, tensor in model.state_dict().items():
            if name in weights and not torch.equal(tensor, weights[name]):
                kill.problems.append(f"{latest.name}: from_pretrained's {name} differs from the file")
                break
        torch.load(latest / "training_state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to load is the finding
        kill.problems.append(f"{latest.name} does not load: {type(e).__name__}: {e}")


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines if line.strip()]


def compare_runs(whole: Path, resumed: Path) -> tuple[bool, bool, list[str]]:
    """(final weights bit-identical, metrics records and results equal, what differs) between the
    uninterrupted and the killed-and-resumed run."""
    import torch
    from safetensors.torch import load_file

    problems = []
    wa = load_file(whole / "model" / "model.safetensors")
    wb = load_file(resumed / "model" / "model.safetensors")
    differ = sorted(k for k in wa.keys() & wb.keys() if not torch.equal(wa[k], wb[k]))
    weights_ok = wa.keys() == wb.keys() and not differ
    if not weights_ok:
        problems.append(f"final weights differ: {differ[:4] or sorted(wa.keys() ^ wb.keys())[:4]}")
    ra, rb = records(whole), records(resumed)
    if ra != rb:
        first = next((i for i, (a, b) in enumerate(zip(ra, rb)) if a != b), min(len(ra), len(rb)))
        shown = (ra[first] if first < len(ra) else None, rb[first] if first < len(rb) else None)
        problems.append(
            f"metrics.jsonl differs ({len(ra)} vs {len(rb)} records); first difference at record "
            f"{first}: uninterrupted {shown[0]} vs resumed {shown[1]}"
        )
    res = [json.loads((r / "results.json").read_text()) for r in (whole, resumed)]
    if (res[0]["steps"], res[0]["final"]) != (res[1]["steps"], res[1]["final"]):
        problems.append(f"results.json differs: {res[0]['final']} vs {res[1]['final']}")
    return weights_ok, len(problems) == (0 if weights_ok else 1), problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=20, help="kills (default 20)")
    p.add_argument("--streaming", action="store_true", help="train from data.streaming: true")
    p.add_argument("--keep", type=int, default=1, help="training.keep_checkpoints (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--work", type=Path, help="work folder (default: a new temporary one, removed on success)")
    p.add_argument("--timeout", type=float, default=120, help="seconds a round may wait for its save")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs (default 1)")
    args = p.parse_args()
    started = time.monotonic()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="ptft-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    # a round moves the newest checkpoint on by at most ~4 saves: the run must outlast all rounds
    max_steps = args.rounds * 4 * SAVE_EVERY + 40
    config = write_config(work, streaming=args.streaming, max_steps=max_steps, keep=args.keep)
    whole, run_dir = work / "whole", work / "run"
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    data = "streaming" if args.streaming else "in-memory"
    print(
        f"tiny CLM, {data} data, {max_steps} steps, a checkpoint every {SAVE_EVERY} steps "
        f"(keep {args.keep}); {args.rounds} SIGKILLs; work folder {work}",
        flush=True,
    )

    # the reference: the same config, never interrupted
    proc = launch(config, whole, logs / "uninterrupted.log", args.threads)
    if proc.wait() != 0:
        print(f"the uninterrupted run failed (status {proc.returncode}):\n{tail(logs / 'uninterrupted.log')}")
        return 1
    print(f"uninterrupted run: {max_steps} steps in {time.monotonic() - started:.0f} s", flush=True)

    run = RunDir(run_dir)
    watcher = SaveWatcher(run.checkpoints_dir)
    kills: list[Kill] = []
    for r in range(1, args.rounds + 1):
        prev = kills[-1] if kills else None
        resumed_at = prev.latest if prev and prev.latest is not None else 0
        # let 0-2 saves of this process finish first (at least one in the first round, so there is
        # a checkpoint to check), so kills also land in saves well after a resume
        skip = rng.randint(1 if r == 1 else 0, 2)
        kill = Kill(r, target=resumed_at + SAVE_EVERY * (skip + 1))
        kills.append(kill)
        log = logs / f"round-{r:02d}.log"
        watcher.start_round()
        proc = launch(config, run_dir, log, args.threads)
        error = kill_during_a_save(proc, watcher, kill, rng, args.timeout)
        said = resumed_from(log)
        if prev is not None:
            prev.resumed = said == resumed_at
            if not prev.resumed:
                prev.problems.append(f"round {r} resumed from step {said}, not the newest {resumed_at}")
        if error:
            kill.problems.append(f"{error}\n{tail(log)}")
        else:
            check_checkpoints(run, kill, resumed_at)
        head = f"resumed from step {said}" if said is not None else "started fresh"
        if error:
            what = "not killed"
        else:
            began = f"{kill.after_ms:3.0f} ms after the save of step {kill.save_step} began"
            what = f"killed {began}, {kill.where()}"
        latest = f"step {kill.latest}" if kill.latest is not None else "none"
        verdict = "loads" if not kill.problems else "FAILED"
        print(f"round {r:2d}/{args.rounds}: {head:>20} · {what} · newest complete: {latest}, {verdict}")
        for problem in kill.problems:
            print(f"    {problem}")
        sys.stdout.flush()

    # the last process runs to the end
    final_log = logs / "final.log"
    proc = launch(config, run_dir, final_log, args.threads)
    rc = proc.wait()
    said = resumed_from(final_log)
    last = kills[-1]
    last.resumed = rc == 0 and said == last.latest
    problems: list[str] = []
    weights_ok = records_ok = False
    if rc != 0:
        problems.append(f"the final --resume auto failed (status {rc}):\n{tail(final_log)}")
    elif said != last.latest:
        last.problems.append(f"the final run resumed from step {said}, not the newest {last.latest}")
    else:
        print(f"final run: resumed from step {said}, finished step {max_steps}")
        weights_ok, records_ok, problems = compare_runs(whole, run_dir)

    ok = sum(1 for k in kills if not k.problems and k.resumed)
    inside = sum(1 for k in kills if k.inside_save)
    pruning = sum(1 for k in kills if k.while_pruning and not k.inside_save)
    for problem in problems:
        print(f"  {problem}")
    print(
        f"{ok}/{len(kills)} kills: newest complete checkpoint loaded and resumed; {inside} kills landed "
        f"during a save ({pruning} more while pruning an old one); final weights bit-identical to the "
        f"uninterrupted run: {'yes' if weights_ok else 'NO'}; metrics records equal: "
        f"{'yes' if records_ok else 'NO'} ({time.monotonic() - started:.0f} s)"
    )
    failed = ok != len(kills) or not (weights_ok and records_ok)
    if failed:
        print(f"FAILED; logs and runs kept in {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

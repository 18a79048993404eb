"""Training engine: run folder, logs, validation, checkpoints, exact resume, kill, done stages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lift3d.config import DataConfig, TrainConfig, load_config
from lift3d.errors import InputError
from lift3d.models.weights import load_weights
from lift3d.training import checkpoint as ckpt
from lift3d.training import engine as engine_mod
from lift3d.training.engine import Engine, EpochSampler, resolve_precision

STEPS = 12


@dataclass
class ToyConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ToyDataset(torch.utils.data.Dataset):
    """20 fixed samples {"x": (4,), "y": (1,)}; 5 batches of 4 per epoch."""

    def __init__(self, n: int = 20) -> None:
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True).sin()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def noisy_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Random augmentation from the global torch RNG, plus dropout inside the model.
    x = batch["x"] + 0.3 * torch.randn_like(batch["x"])
    loss = ((model(x) - batch["y"]) ** 2).mean()
    return {"loss": loss, "batch_mean": batch["x"].mean()}


def make_cfg(**kw) -> ToyConfig:
    train = dict(
        device="cpu",
        seed=3,
        batch_size=4,
        lr=1e-2,
        grad_clip=1.0,
        log_every=1,
        val_every=0,
        ckpt_every=3,
        keep_last=2,
    )
    train.update(kw)
    return ToyConfig(train=TrainConfig(**train))


def build(cfg: ToyConfig, run_dir: Path):
    """A fresh Engine, model (with dropout), optimiser and scheduler, as a new process would."""
    engine = Engine(cfg.train, run_dir, full_config=cfg, task="toy")
    model = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.3), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.1 * s))
    return engine, model, opt, sched


def run(cfg, run_dir, step_fn=noisy_step, **kw):
    engine, model, opt, sched = build(cfg, run_dir)
    kw.setdefault("max_steps", STEPS)
    engine.fit("toy", model, opt, ToyDataset(), step_fn, scheduler=sched, **kw)
    return model


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def scramble_rng() -> None:
    """Leave the global RNGs somewhere a fresh process would not be."""
    torch.manual_seed(999)
    torch.rand(17)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An unbroken STEPS-step run, shared by the tests that compare against it."""
    run_dir = tmp_path_factory.mktemp("straight")
    model = run(make_cfg(val_every=5), run_dir, validate_fn=lambda m, s: {"mse": 0.5 + s})
    return run_dir, model


# --------------------------------------------------------------------------- small units


def test_resolve_precision():
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("32", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    with pytest.raises(InputError, match="16-mixed needs a CUDA"):
        resolve_precision("16-mixed", "cpu")
    with pytest.raises(InputError, match="train.precision"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_bf16_if_fast_follows_the_cpu_tile_units(monkeypatch, amx, expected):
    from lift3d.training import engine

    monkeypatch.setattr(engine, "cpu_has_amx_bf16", lambda: amx)
    assert resolve_precision("bf16-if-fast", "cpu") == expected


def test_cpu_amx_flag_read_from_cpuinfo(monkeypatch, tmp_path):
    import builtins

    from lift3d import utils

    real_open = builtins.open
    for flags, expected in (("fpu avx512f avx512_bf16", False), ("fpu amx_bf16 amx_tile", True)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")

        def fake_open(path, *args, _info=info, **kwargs):
            return real_open(_info if path == "/proc/cpuinfo" else path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        assert utils.cpu_has_amx_bf16() is expected
        monkeypatch.setattr(builtins, "open", real_open)


def test_sampler_seeded_sharded_and_resumable():
    one = EpochSampler(10, seed=1)
    assert sorted(one.epoch_order(0)) == list(range(10))
    assert one.epoch_order(0) == EpochSampler(10, seed=1).epoch_order(0)
    assert one.epoch_order(0) != one.epoch_order(1)
    assert one.epoch_order(0) != EpochSampler(10, seed=2).epoch_order(0)
    ranks = [EpochSampler(10, seed=1, rank=r, world_size=2) for r in range(2)]
    orders = [r.epoch_order(0) for r in ranks]
    assert sorted(orders[0] + orders[1]) == list(range(10))
    # Global batch k of one process = union of batch k of each rank (per-rank batch 2 -> 4).
    full = one.epoch_order(0)
    for k in range(2):
        assert sorted(full[4 * k : 4 * k + 4]) == sorted(
            orders[0][2 * k : 2 * k + 2] + orders[1][2 * k : 2 * k + 2]
        )
    ranks[1].set_epoch(0, skip=3)
    assert list(ranks[1]) == orders[1][3:] and len(ranks[1]) == 2
    odd = [EpochSampler(5, seed=0, rank=r, world_size=2) for r in range(2)]
    assert len(odd[0]) == len(odd[1]) == 3  # padded by wrapping, like DistributedSampler
    assert set(odd[0].epoch_order(0) + odd[1].epoch_order(0)) == set(range(5))


# --------------------------------------------------------------------------- run folder and logs


def test_run_folder_logs_and_validation(straight):
    run_dir, _ = straight
    cfg = load_config(ToyConfig, run_dir / "config.yaml")
    assert cfg == make_cfg(val_every=5)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["task"] == "toy" and info["seed"] == 3 and info["device"] == "cpu"
    assert info["lift3d_version"] and info["torch_version"] == torch.__version__
    assert {"hostname", "command", "start_time", "precision"} <= set(info)
    records = read_jsonl(run_dir / "logs/toy.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert {"loss", "batch_mean", "grad_norm", "lr", "seconds"} <= set(records[0])
    assert records[-1]["lr"] == pytest.approx(1e-2 / (1 + 0.1 * STEPS))  # scheduler stepped
    val = read_jsonl(run_dir / "logs/toy_val.jsonl")
    assert [r["step"] for r in val] == [5, 10, 12]  # every val_every steps and at the end
    assert val[0]["mse"] == 5.5
    log = (run_dir / "log.txt").read_text()
    assert "toy step 12/12" in log and "finished at step 12" in log


def test_checkpoint_files(straight):
    run_dir, model = straight
    stage_dir = run_dir / "checkpoints/toy"
    assert [s for s, _ in ckpt.list_checkpoints(stage_dir)] == [9, 12]  # keep_last=2
    names = sorted(p.name for p in stage_dir.iterdir())
    assert names == [
        "done",
        "final.json",
        "final.safetensors",
        "step_0000009.json",
        "step_0000009.safetensors",
        "step_0000012.json",
        "step_0000012.safetensors",
    ]
    meta, tensors = ckpt.load_checkpoint(stage_dir / "step_0000012.json")
    assert meta["step"] == 12 and meta["config"]["train"]["seed"] == 3
    assert meta["lift3d_version"] and meta["stage"] == "toy"
    assert meta["data"] == {
        "epoch": 2,
        "batch_in_epoch": 2,
        "batch_size": 4,
        "world_size": 1,
        "seed": 3,
    }
    assert meta["optimizer"]["param_groups"][0]["weight_decay"] == 0.01
    assert set(meta["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    assert {k.split(".")[0] for k in tensors} == {"model", "optim", "rng"}  # no sched tensors
    for key, value in model.state_dict().items():
        assert torch.equal(tensors[f"model.{key}"], value)
    final = nn.Sequential(nn.Linear(4, 32), nn.Dropout(0.3), nn.ReLU(), nn.Linear(32, 1))
    meta_final = load_weights(final, stage_dir / "final.safetensors")
    assert meta_final["step"] == 12
    assert_same_weights(final, model)


# --------------------------------------------------------------------------- resume


def test_resume_is_bitwise_identical(straight, tmp_path):
    _, reference = straight
    cfg = make_cfg(val_every=5)
    val = lambda m, s: {"mse": 0.5 + s}  # noqa: E731
    half = run(cfg, tmp_path, stop_after=STEPS // 2 + 1, validate_fn=val)  # stops mid-epoch 1
    assert not (tmp_path / "checkpoints/toy/done").exists()
    with pytest.raises(AssertionError):
        assert_same_weights(half, reference)
    scramble_rng()
    resumed = run(cfg, tmp_path, validate_fn=val)
    assert_same_weights(resumed, reference)
    steps = [r["step"] for r in read_jsonl(tmp_path / "logs/toy.jsonl")]
    assert steps == list(range(1, STEPS + 1))
    assert "resumed from step_0000007.json" in (tmp_path / "log.txt").read_text()


def test_rng_restore_matters(straight, tmp_path, monkeypatch):
    """Control: resuming without the saved RNG states (dropout, augmentation) diverges."""
    _, reference = straight
    run(make_cfg(), tmp_path, stop_after=6)
    monkeypatch.setattr(engine_mod, "set_rng_state", lambda state: None)
    resumed = run(make_cfg(), tmp_path)
    with pytest.raises(AssertionError):
        assert_same_weights(resumed, reference)


def test_kill_inside_step_leaves_complete_checkpoints(straight, tmp_path):
    _, reference = straight
    calls = {"n": 0}

    def dying_step(model, batch):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated kill at step 8")
        return noisy_step(model, batch)

    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(), tmp_path, step_fn=dying_step)
    stage_dir = tmp_path / "checkpoints/toy"
    assert sorted(p.name for p in stage_dir.iterdir()) == [
        "step_0000003.json",
        "step_0000003.safetensors",
        "step_0000006.json",
        "step_0000006.safetensors",
    ]
    scramble_rng()
    assert_same_weights(run(make_cfg(), tmp_path), reference)


def test_kill_while_writing_checkpoint(straight, tmp_path, monkeypatch):
    """Weights written but JSON not: the pair is incomplete, ignored and cleaned on resume."""
    _, reference = straight
    real_write = ckpt._write_json

    def failing_write(path, data):
        if data.get("step") == 6:
            raise KeyboardInterrupt("killed between the two files")
        real_write(path, data)

    monkeypatch.setattr(ckpt, "_write_json", failing_write)
    with pytest.raises(KeyboardInterrupt):
        run(make_cfg(), tmp_path)
    stage_dir = tmp_path / "checkpoints/toy"
    assert (stage_dir / "step_0000006.safetensors").exists()
    assert [s for s, _ in ckpt.list_checkpoints(stage_dir)] == [3]
    monkeypatch.setattr(ckpt, "_write_json", real_write)
    resumed = run(make_cfg(), tmp_path)
    assert_same_weights(resumed, reference)
    log = (tmp_path / "log.txt").read_text()
    assert "removed incomplete checkpoint file" in log and "resumed from step_0000003.json" in log


def flip_last_byte(path: Path) -> None:
    """One flipped bit in the tensor data (the end of a safetensors file)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_resume_falls_back_to_newest_intact_checkpoint(straight, tmp_path):
    _, reference = straight
    run(make_cfg(), tmp_path, stop_after=6)  # checkpoints at steps 3 and 6
    stage_dir = tmp_path / "checkpoints/toy"
    flip_last_byte(stage_dir / "step_0000006.safetensors")
    scramble_rng()
    resumed = run(make_cfg(), tmp_path)
    assert_same_weights(resumed, reference)  # exact resume from step 3
    log = (tmp_path / "log.txt").read_text()
    assert "skipping damaged checkpoint" in log and "checksum" in log
    assert "resumed from step_0000003.json (step 3), the newest intact checkpoint" in log


def test_resume_with_no_intact_checkpoint_fails_cleanly(tmp_path):
    run(make_cfg(), tmp_path, stop_after=3)  # one checkpoint, at step 3
    flip_last_byte(tmp_path / "checkpoints/toy/step_0000003.safetensors")
    with pytest.raises(InputError, match="no intact checkpoint to resume from"):
        run(make_cfg(), tmp_path)


def test_diverging_loss_names_step_and_last_good_checkpoint(straight, tmp_path):
    _, reference = straight
    calls = {"n": 0}

    def diverging_step(model, batch):
        calls["n"] += 1
        out = noisy_step(model, batch)
        if calls["n"] == 5:
            out["loss"] = out["loss"] * float("inf")
        return out

    cfg = make_cfg(ckpt_every=1, keep_last=3)
    with pytest.raises(InputError) as exc:
        run(cfg, tmp_path, step_fn=diverging_step)
    message = str(exc.value)
    stage_dir = tmp_path / "checkpoints/toy"
    assert "loss is inf at step 5, training diverged" in message
    # the weights after step 4 gave the non-finite loss: step 3 is the last good checkpoint
    assert f"last good checkpoint {stage_dir / 'step_0000003.safetensors'} (step 3)" in message
    assert "removed step_0000004" in message and len(message.splitlines()) == 1
    assert [s for s, _ in ckpt.list_checkpoints(stage_dir)] == [2, 3]
    scramble_rng()
    assert_same_weights(run(cfg, tmp_path), reference)  # --resume continues from step 3


def test_zero_step_stage_leaves_the_model(tmp_path):
    engine, model, opt, _ = build(make_cfg(), tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = engine.fit("none", model, opt, ToyDataset(), noisy_step, max_steps=0)
    assert all(torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert not (tmp_path / "checkpoints/none").exists()


def test_done_stage_is_skipped_and_rng_matches(straight, tmp_path):
    run_dir, reference = straight

    def must_not_run(model, batch):
        raise AssertionError("a finished stage must not train again")

    engine, model, opt, sched = build(make_cfg(val_every=5), run_dir)
    engine.fit("toy", model, opt, ToyDataset(), must_not_run, STEPS, scheduler=sched)
    assert_same_weights(model, reference)
    after_skip = torch.rand(3)
    # A pipeline that trained the stage sees the same RNG state afterwards.
    run(make_cfg(), tmp_path)
    assert torch.equal(torch.rand(3), after_skip)


# --------------------------------------------------------------------------- step behaviour


def test_validation_does_not_change_training(straight, tmp_path):
    _, reference = straight

    def greedy_validate(model, step):
        assert not model.training and not torch.is_grad_enabled()
        torch.rand(100)  # draws from the RNG the training also uses
        return {"mse": 0.5 + step}

    model = run(make_cfg(val_every=2), tmp_path, validate_fn=greedy_validate)
    assert_same_weights(model, reference)


def test_gradient_clipping(tmp_path):
    cfg = make_cfg(grad_clip=0.01, lr=1.0)
    engine = Engine(cfg.train, tmp_path, full_config=cfg)
    model = nn.Linear(4, 1)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    step = lambda m, b: {"loss": 100 * ((m(b["x"]) - b["y"]) ** 2).mean()}  # noqa: E731
    engine.fit("clip", model, opt, ToyDataset(), step, max_steps=1)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert moved.norm() == pytest.approx(0.01, rel=1e-4)  # SGD lr 1: the step is the clipped grad
    assert read_jsonl(tmp_path / "logs/clip.jsonl")[0]["grad_norm"] > 1.0  # pre-clip norm


def test_bad_step_outputs(tmp_path):
    cfg = make_cfg()
    engine, model, opt, _ = build(cfg, tmp_path)
    with pytest.raises(TypeError, match="'loss'"):
        engine.fit("a", model, opt, ToyDataset(), lambda m, b: m(b["x"]).mean(), max_steps=2)
    nan_step = lambda m, b: {"loss": m(b["x"]).mean() * float("nan")}  # noqa: E731
    with pytest.raises(InputError, match="at step 1, training diverged; no good checkpoint"):
        engine.fit("b", model, opt, ToyDataset(), nan_step, max_steps=2)
    with pytest.raises(InputError, match="empty"):
        engine.fit("c", model, opt, ToyDataset(0), noisy_step, max_steps=2)


def test_config_yaml_is_resolved_config(tmp_path):
    cfg = make_cfg()
    cfg.data.shape = [8, 16, 16]
    Engine(cfg.train, tmp_path, full_config=cfg, task="toy")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["data"]["shape"] == [8, 16, 16] and saved["train"]["ckpt_every"] == 3


@pytest.mark.gpu
def test_bf16_mixed_on_gpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cfg = make_cfg(device="cuda", precision="auto")
    engine, model, opt, sched = build(cfg, tmp_path)
    assert engine.precision in ("bf16-mixed", "16-mixed")
    seen = {}

    def step(m, b):
        out = m(b["x"])
        seen["dtype"] = out.dtype
        return {"loss": ((out.float() - b["y"]) ** 2).mean()}

    engine.fit("gpu", model, opt, ToyDataset(), step, max_steps=4, scheduler=sched)
    assert seen["dtype"] in (torch.bfloat16, torch.float16)  # autocast inside step_fn
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32
    assert next(model.parameters()).is_cuda
    assert ckpt.list_checkpoints(tmp_path / "checkpoints/gpu")[-1][0] == 4


def test_progress_lines_when_bar_is_off(tmp_path, caplog):
    cfg = make_cfg(log_every=2)
    caplog.set_level("INFO", logger="lift3d")
    for show, run_dir in ((False, tmp_path / "off"), (True, tmp_path / "on")):
        caplog.clear()
        engine = Engine(cfg.train, run_dir, full_config=cfg, show_progress=show)
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        step = lambda m, b: {"loss": ((m(b["x"]) - b["y"]) ** 2).mean()}  # noqa: E731
        engine.fit("p", model, opt, ToyDataset(), step, max_steps=4)
        console = [r.getMessage() for r in caplog.records if r.name == "lift3d.training.progress"]
        in_file = [
            line for line in (run_dir / "log.txt").read_text().splitlines() if "p step" in line
        ]
        assert len(in_file) == 2 and "p step 4/4 loss" in in_file[-1] and "eta" in in_file[-1]
        # With the bar on, the bar shows progress and the lines go to log.txt only.
        assert len(console) == (0 if show else 2)


def test_bf16_mixed_on_cpu_uses_autocast(tmp_path):
    cfg = make_cfg(precision="bf16-mixed", val_every=2)
    engine, model, opt, sched = build(cfg, tmp_path)
    assert engine.precision == "bf16-mixed"
    seen = {}

    def step(m, b):
        out = m(b["x"])
        seen["train"] = out.dtype
        return {"loss": ((out.float() - b["y"]) ** 2).mean()}

    def validate(m, s):
        seen["val"] = m(torch.ones(1, 4)).dtype
        return {"one": 1.0}

    engine.fit("amp", model, opt, ToyDataset(), step, max_steps=2, validate_fn=validate)
    assert seen == {"train": torch.bfloat16, "val": torch.bfloat16}
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_workers_persist_across_epochs_and_train_the_same(straight, tmp_path, monkeypatch):
    """num_workers > 0: one DataLoader for the whole stage (persistent workers, prefetching),
    and the same batches, hence the same weights, as loading in the main process."""
    from lift3d.training import engine as engine_module

    built = []

    class CountingLoader(engine_module.DataLoader):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(engine_module, "DataLoader", CountingLoader)
    model = run(make_cfg(val_every=5), tmp_path, num_workers=2, validate_fn=lambda m, s: None)
    assert len(built) == 1  # STEPS = 12 batches of 4 over 20 samples: three epochs, one loader
    assert built[0]["persistent_workers"] is True
    assert built[0]["prefetch_factor"] == engine_module.PREFETCH_FACTOR
    assert built[0]["pin_memory"] is False  # CPU
    assert_same_weights(model, straight[1])


def test_thread_policy_is_asked_before_every_step_and_sets_the_threads(tmp_path, monkeypatch):
    """A caller's `thread_policy(stage, step)` sets torch's intra-op threads for each step
    (make demo's generation process takes the cores the other process leaves idle)."""
    before = torch.get_num_threads()
    asked, seen = [], []

    def policy(stage, step):
        asked.append((stage, step))
        return 1 if step < 4 else 2

    def step_fn(model, batch):
        seen.append(torch.get_num_threads())
        return noisy_step(model, batch)

    monkeypatch.setattr(engine_mod, "thread_policy", policy)
    try:
        run(make_cfg(num_threads=1), tmp_path / "run", step_fn=step_fn, max_steps=6)
    finally:
        torch.set_num_threads(before)
    assert asked == [("toy", s) for s in range(6)]
    assert seen == [1, 1, 1, 1, 2, 2]

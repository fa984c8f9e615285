"""Convergence verdicts and early stopping on synthetic loss sequences."""

import math

from voicefleet.platform.training.monitor import ConvergenceMonitor, MonitorConfig


def feed(monitor, recon, *, kl=None, gen=None, disc=None, step0=0):
    out = []
    for i, r in enumerate(recon):
        step = step0 + i * 10
        train = {}
        if kl is not None:
            train["kl"] = kl[i]
        if gen is not None:
            train["gen"], train["disc"] = gen[i], disc[i]
        if train:
            out += monitor.observe_train(step, train)
        out += monitor.observe_eval(step, {"val_recon": r})
    return out


def kinds(verdicts):
    return [v.kind for v in verdicts]


def test_plateau_is_reported_once_and_early_stopping_fires():
    m = ConvergenceMonitor(MonitorConfig(window=3, patience=4))
    improving = [10 * 0.7**i for i in range(6)]
    flat = [improving[-1] * (1 + 0.001 * (i % 2)) for i in range(8)]
    verdicts = feed(m, improving + flat)
    assert kinds(verdicts).count("plateau") == 1
    assert "early_stop" in kinds(verdicts) and m.stop
    assert m.best_step == 50  # the last improving evaluation
    assert any("plateau" in s for s in m.summary())


def test_improving_run_does_not_stop():
    m = ConvergenceMonitor(MonitorConfig(window=3, patience=3))
    verdicts = feed(m, [10 * 0.8**i for i in range(15)])
    assert not m.stop and "early_stop" not in kinds(verdicts) and "plateau" not in kinds(verdicts)
    assert m.improved


def test_kl_blow_up_is_flagged_and_healthy_kl_is_noted():
    m = ConvergenceMonitor(MonitorConfig(window=3, kl_band=(0.5, 5.0)))
    healthy = feed(m, [5, 4, 3, 2.5], kl=[1.0, 1.2, 1.1, 1.0])
    assert "kl_healthy" in kinds(healthy)
    blown = feed(m, [2.4, 2.4, 2.4, 2.4], kl=[4.0, 6.0, 9.0, 14.0], step0=100)
    assert "kl_rising" in kinds(blown)


def test_discriminator_collapse_and_generator_losing():
    m = ConvergenceMonitor(MonitorConfig(window=3))
    verdicts = feed(m, [5, 4, 3, 2], gen=[6.0, 6.5, 7.0, 7.2], disc=[0.01, 0.02, 0.01, 0.01])
    assert "disc_collapse" in kinds(verdicts) and "gen_losing" in kinds(verdicts)
    balanced = ConvergenceMonitor(MonitorConfig(window=3))
    assert not {"disc_collapse", "gen_losing"} & set(kinds(
        feed(balanced, [5, 4, 3, 2], gen=[2.5, 2.4, 2.6, 2.5], disc=[2.4, 2.5, 2.4, 2.5])))


def test_spikes_and_non_finite_losses_are_counted():
    m = ConvergenceMonitor()
    for step in range(20):
        m.observe_train(step, {"mel": 20.0 + (step % 3)})
    spike = m.observe_train(20, {"mel": 200.0})
    nan = m.observe_train(21, {"mel": math.nan}) + m.observe_train(22, {"mel": math.inf})
    assert kinds(spike) == ["spike"]
    assert kinds(nan) == ["non_finite", "non_finite"] and m.non_finite == 2


def test_state_round_trip_continues_identically():
    cfg = MonitorConfig(window=3, patience=3)
    seq = [10, 8, 7, 6.99, 6.98, 6.985, 6.99, 6.98, 6.99]
    whole = ConvergenceMonitor(cfg)
    feed(whole, seq)
    first = ConvergenceMonitor(cfg)
    feed(first, seq[:4])
    resumed = ConvergenceMonitor(cfg)
    resumed.load_state_dict(first.state_dict())
    feed(resumed, seq[4:], step0=40)
    assert kinds(resumed.verdicts) == kinds(whole.verdicts)
    assert resumed.stop == whole.stop and resumed.best == whole.best

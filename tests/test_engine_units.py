"""Engine building blocks in isolation: LR schedules, optimizer groups, EMA, the multi-view score
meter and its reports, checkpoint naming/publishing, resume resolution, mid-epoch skipping."""
import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from engine.config import ConfigError, load_config
from engine.ema import ModelEma
from engine.evaluator import (EvaluationError, VideoScoreMeter, classification_metrics, summarize,
                              write_eval_results)
from engine.lr_schedule import WarmupLRScheduler, build_scheduler
from engine.checkpoint import checkpoint_names, write_checkpoint
from engine.meters import AverageMeter
from utils.progress import format_duration
from engine.optim import build_optimizer, clip_gradients, param_groups_weight_decay
from engine.preemption import PreemptionFlag
from engine.resume import resolve_resume, skip_first_batches
from engine.trainer import NonFiniteLossError, check_finite_weights
from utils.fs import publish_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CFG = os.path.join(REPO, 'configs', 'toy', 'video-focalnet_toy.yaml')


def _sched(name='cosine', legacy=False, total=120, warmup=20, **kw):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    return WarmupLRScheduler(opt, name, total, warmup, warmup_lr=0.001, min_lr=0.001, legacy_cosine=legacy, **kw)


# ------------------------------------------------------------------------------------------------ scheduler
@pytest.mark.parametrize('t,expected', [(0, 0.001), (10, 0.0505), (19, 0.09505)])
def test_warmup_is_linear_from_warmup_lr(t, expected):
    for legacy in (False, True):
        assert _sched(legacy=legacy).lr_at(t, 0.1) == pytest.approx(expected, rel=1e-12)


def test_legacy_cosine_reproduces_timm_054_jump_after_warmup():
    s = _sched(legacy=True)
    # cosine counted from step 0: at t = 20 of 120, 0.001 + 0.5 * 0.099 * (1 + cos(pi / 6)) = 0.0933628...
    assert s.lr_at(20, 0.1) == pytest.approx(0.001 + 0.0495 * (1 + math.cos(math.pi / 6)), rel=1e-12)
    assert s.lr_at(20, 0.1) / 0.1 == pytest.approx(0.9336, abs=1e-4)
    assert s.lr_at(60, 0.1) == pytest.approx(0.0505, rel=1e-12)
    assert s.lr_at(120, 0.1) == pytest.approx(0.001) and s.lr_at(500, 0.1) == pytest.approx(0.001)


def test_default_cosine_is_continuous_after_warmup():
    s = _sched(legacy=False)
    assert s.lr_at(20, 0.1) == pytest.approx(0.1, rel=1e-12)
    assert s.lr_at(70, 0.1) == pytest.approx(0.0505, rel=1e-12)  # half-way through 100 cosine steps
    assert s.lr_at(45, 0.1) == pytest.approx(0.001 + 0.0495 * (1 + math.cos(math.pi / 4)), rel=1e-12)
    assert s.lr_at(120, 0.1) == pytest.approx(0.001)
    lrs = [s.lr_at(t, 0.1) for t in range(121)]
    assert max(abs(a - b) for a, b in zip(lrs, lrs[1:])) < 0.006  # no jump


def test_linear_and_step_schedules():
    lin = _sched('linear')
    assert lin.lr_at(20, 0.1) == pytest.approx(0.1)
    assert lin.lr_at(70, 0.1) == pytest.approx(0.1 - 0.099 * 0.5)
    assert lin.lr_at(120, 0.1) == pytest.approx(0.001)  # 1% of the base, Swin's rule
    step = _sched('step', decay_updates=30, decay_rate=0.1)
    assert step.lr_at(19, 0.1) == pytest.approx(0.09505)
    assert step.lr_at(20, 0.1) == pytest.approx(0.1)
    assert step.lr_at(30, 0.1) == pytest.approx(0.01)
    assert step.lr_at(65, 0.1) == pytest.approx(0.001)


def test_scheduler_sets_groups_and_round_trips_state():
    opt = torch.optim.SGD([{'params': [nn.Parameter(torch.zeros(1))], 'lr': 0.1},
                           {'params': [nn.Parameter(torch.zeros(1))], 'lr': 0.2}], lr=0.1)
    s = WarmupLRScheduler(opt, 'cosine', 100, 10, warmup_lr=0.0, min_lr=0.0)
    assert [g['lr'] for g in opt.param_groups] == [0.0, 0.0]
    s.step_update(5)
    assert [g['lr'] for g in opt.param_groups] == pytest.approx([0.05, 0.1])
    state = s.state_dict()
    opt2 = torch.optim.SGD([{'params': [nn.Parameter(torch.zeros(1))], 'lr': 0.1},
                            {'params': [nn.Parameter(torch.zeros(1))], 'lr': 0.2}], lr=0.1)
    s2 = WarmupLRScheduler(opt2, 'cosine', 100, 10, warmup_lr=0.0, min_lr=0.0)
    s2.load_state_dict(state)
    assert s2.num_updates == 5 and s2.get_last_lr() == s.get_last_lr()
    s2.load_state_dict({'t_initial': 100, 'base_values': [0.1]})  # a timm dict (the original's): ignored
    assert s2.num_updates == 5


def test_build_scheduler_converts_epochs_to_updates():
    cfg = load_config(TOY_CFG, ['TRAIN.EPOCHS', '4', 'TRAIN.WARMUP_EPOCHS', '1', 'TRAIN.LR_SCHEDULER.NAME', 'step',
                                'TRAIN.LR_SCHEDULER.DECAY_EPOCHS', '2'])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.TRAIN.BASE_LR)
    s = build_scheduler(cfg, opt, updates_per_epoch=10)
    assert (s.total_updates, s.warmup_updates, s.decay_updates) == (40, 10, 20)


# ------------------------------------------------------------------------------------------------ optimizer
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.gamma = nn.Parameter(torch.ones(4, 1))  # 2-D but listed in no_weight_decay
        self.head = nn.Linear(4, 2)

    def no_weight_decay(self):
        return {'gamma'}


def test_weight_decay_groups_follow_no_weight_decay_and_1d_params():
    net = _Net()
    decay, no_decay = param_groups_weight_decay(net, 0.05)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay['params']) == ids([net.conv.weight, net.head.weight]) and decay['weight_decay'] == 0.05
    assert ids(no_decay['params']) == ids([net.conv.bias, net.norm.weight, net.norm.bias, net.gamma, net.head.bias])
    assert no_decay['weight_decay'] == 0.0


@pytest.mark.parametrize('name,nesterov', [('sgd', True), ('sgd', False), ('adamw', False)])
def test_build_optimizer(name, nesterov):
    cfg = load_config(TOY_CFG, ['TRAIN.OPTIMIZER.NAME', name, 'TRAIN.OPTIMIZER.NESTEROV', str(nesterov),
                                'TRAIN.WEIGHT_DECAY', '1e-4'])
    opt = build_optimizer(cfg, _Net())
    assert type(opt).__name__ == {'sgd': 'SGD', 'adamw': 'AdamW'}[name]
    assert [g['weight_decay'] for g in opt.param_groups] == [1e-4, 0.0]
    if name == 'sgd':
        assert opt.param_groups[0]['nesterov'] is nesterov and opt.param_groups[0]['momentum'] == 0.9


def test_clip_gradients_returns_pre_clip_norm():
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    assert float(clip_gradients([p], 1.0)) == pytest.approx(5.0)
    assert torch.linalg.vector_norm(p.grad).item() == pytest.approx(1.0, rel=1e-5)
    p.grad = torch.tensor([3.0, 4.0])
    assert float(clip_gradients([p], 0.0)) == pytest.approx(5.0) and p.grad.tolist() == [3.0, 4.0]


# ------------------------------------------------------------------------------------------------ EMA
def test_model_ema_averages_weights_and_copies_buffers():
    net = nn.BatchNorm1d(2)
    ema = ModelEma(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(7.0)
    ema.update(net)
    assert ema.module.weight.tolist() == [2.0, 2.0]  # 0.5 * 1 + 0.5 * 3
    assert ema.module.running_mean.tolist() == [7.0, 7.0]
    clone = ModelEma(nn.BatchNorm1d(2), decay=0.5)
    clone.load_state_dict(ema.state_dict())
    assert clone.module.weight.tolist() == [2.0, 2.0] and clone.num_updates == 1


# ------------------------------------------------------------------------------------------------ evaluation
def _meter_with(views=2, agg='softmax'):
    m = VideoScoreMeter(num_classes=3, num_views=views, score_agg=agg)
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]],     # video 0, label 0
                           [[0.0, 0.0, 5.0], [0.0, 0.0, 4.0]]])    # video 2, label 1 (wrong)
    m.update([0, 2], logits, [0, 1])
    m.update(torch.tensor([1]), torch.tensor([[[0.0, 3.0, 0.0], [0.0, 3.0, 1.0]]]), torch.tensor([1]))
    return m


def test_meter_sums_softmax_over_views_and_computes_metrics():
    m = _meter_with()
    m.check(num_videos=3)
    idx, scores, labels = m.arrays()
    assert idx.tolist() == [0, 1, 2] and labels.tolist() == [0, 1, 1]
    expected0 = (torch.softmax(torch.tensor([2.0, 0, 0]), 0) + torch.softmax(torch.tensor([0, 1.0, 0]), 0)) / 2
    np.testing.assert_allclose(scores[0], expected0.numpy(), rtol=1e-6)
    r = summarize(m)
    assert r['acc1'] == pytest.approx(200 / 3) and r['acc5'] == 100.0
    assert r['mean_class_acc'] == pytest.approx(75.0)  # class 0: 1/1, class 1: 1/2
    assert r['num_videos'] == 3 and r['num_views'] == 2 and r['unreadable'] == []


def test_logit_mean_aggregation_can_differ_from_softmax_sum():
    logits = torch.tensor([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])
    soft = VideoScoreMeter(2, 3, 'softmax')
    soft.update([0], logits, [0])
    mean = VideoScoreMeter(2, 3, 'logits')
    mean.update([0], logits, [0])
    assert soft.arrays()[1][0].argmax() == 1  # two confident votes for class 1 win the probability sum
    assert mean.arrays()[1][0].argmax() == 0  # one huge logit wins the mean
    np.testing.assert_allclose(mean.arrays()[1][0], [10 / 3, 2.0], rtol=1e-6)


def test_meter_checks_view_counts_duplicates_and_missing_videos():
    m = _meter_with()
    m.update([1], torch.zeros(1, 2, 3), [1])  # video 1 again: 4 views
    with pytest.raises(EvaluationError, match='views other than 2'):
        m.check()
    m = _meter_with()
    with pytest.raises(EvaluationError, match='1 missing'):
        m.check(num_videos=4)
    m.add_unreadable([(3, 'bad.mp4', 'truncated')])
    m.check(num_videos=4)
    assert summarize(m)['unreadable'] == ['bad.mp4'] and summarize(m)['num_unreadable'] == 1
    m.add_unreadable([(0, 'a.mp4', 'x')])
    with pytest.raises(EvaluationError, match='both scored and reported unreadable'):
        m.check()


def test_meter_synchronize_merges_ranks_and_refuses_a_video_on_two_ranks(monkeypatch):
    import engine.evaluator as ev
    a = VideoScoreMeter(3, 1)
    a.update([0, 2], torch.zeros(2, 1, 3), [0, 2])
    b = VideoScoreMeter(3, 1)
    b.update([1], torch.zeros(1, 1, 3), [1])
    b.add_unreadable([(3, 'x.mp4', 'empty')])
    parts = [(a.scores, a.labels, a.views, a.unreadable), (b.scores, b.labels, b.views, b.unreadable)]
    monkeypatch.setattr(ev, 'all_gather_object', lambda obj: parts)
    a.synchronize()
    a.check(num_videos=4)
    assert sorted(a.scores) == [0, 1, 2] and list(a.unreadable) == [3]
    b.update([2], torch.zeros(1, 1, 3), [2])
    parts[1] = (b.scores, b.labels, b.views, b.unreadable)
    c = VideoScoreMeter(3, 1)
    c.update([0, 2], torch.zeros(2, 1, 3), [0, 2])
    with pytest.raises(EvaluationError, match='ranks 0 and 1'):
        c.synchronize()


def test_classification_metrics_hand_computed():
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([1, 0, 1, 2])
    r = classification_metrics(scores, labels)
    assert r['acc1'] == 50.0 and r['acc5'] == 100.0  # k clipped to K = 3
    assert r['mean_class_acc'] == pytest.approx(100 * (1 + 0.5 + 0) / 3)


def test_eval_outputs_are_quoted_csv_and_json(tmp_path):
    m = _meter_with()
    m.add_unreadable([(3, 'dir/broken, "one".mp4', 'no frames')])
    samples = [('a,b.mp4', 0), ('c.mp4', 1), ('d "q".mp4', 1), ('dir/broken, "one".mp4', 2)]
    names = ['open, then close', 'pour "tea"', 'x']
    result = summarize(m)
    json_path, csv_path = write_eval_results(str(tmp_path), result, m, samples, names)
    data = json.load(open(json_path))
    for key in ('acc1', 'acc5', 'mean_class_acc', 'num_videos', 'num_views', 'unreadable'):
        assert key in data
    assert data['unreadable'] == ['dir/broken, "one".mp4']
    rows = list(csv.DictReader(open(csv_path, newline='')))
    assert [r['path'] for r in rows] == ['a,b.mp4', 'c.mp4', 'd "q".mp4']
    assert rows[0]['label_name'] == 'open, then close' and rows[0]['top1_id'] == '0' and rows[0]['correct'] == '1'
    assert rows[2]['top1_name'] == 'x' and rows[2]['top3_id'] != '' and 'top4_id' not in rows[0]
    assert 0.0 < float(rows[0]['top1_score']) <= 1.0


# ------------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_names_order_and_frequency():
    # last.pth first: the commit point, from which the other names are published (and completed after a kill)
    assert checkpoint_names(0, 10, 5, improved=True) == ['last.pth', 'ckpt_epoch_0.pth', 'best.pth']
    assert checkpoint_names(3, 10, 5, improved=False) == ['last.pth']
    assert checkpoint_names(9, 10, 5, improved=False) == ['last.pth', 'ckpt_epoch_9.pth']  # the last epoch


def test_write_checkpoint_once_and_publish_names(tmp_path):
    paths = write_checkpoint(str(tmp_path), ['best.pth', 'last.pth'], {'model': {'w': torch.ones(2)}, 'epoch': 0})
    write_checkpoint(str(tmp_path), ['last.pth'], {'model': {'w': torch.zeros(2)}, 'epoch': 1})
    best = torch.load(paths[0], weights_only=True)
    last = torch.load(paths[1], weights_only=True)
    assert best['epoch'] == 0 and best['model']['w'].tolist() == [1.0, 1.0]  # rewriting last did not touch best
    assert last['epoch'] == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_interrupted_checkpoint_write_keeps_previous_last(tmp_path, monkeypatch):
    write_checkpoint(str(tmp_path), ['last.pth'], {'model': {'w': torch.ones(3)}, 'epoch': 4})

    def torn_save(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a zip file')
        raise KeyboardInterrupt  # e.g. the process is interrupted mid-write

    monkeypatch.setattr(torch, 'save', torn_save)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(str(tmp_path), ['last.pth'], {'model': {'w': torch.zeros(3)}, 'epoch': 5})
    monkeypatch.undo()
    from engine.checkpoint import load_checkpoint_file
    from engine.resume import find_auto_resume
    assert find_auto_resume(str(tmp_path)) == os.path.join(str(tmp_path), 'last.pth')
    assert load_checkpoint_file(os.path.join(str(tmp_path), 'last.pth'))['epoch'] == 4


def test_publish_file_replaces_atomically(tmp_path):
    src, dst = tmp_path / 'a', tmp_path / 'b'
    src.write_text('new')
    dst.write_text('old')
    publish_file(str(src), str(dst))
    assert dst.read_text() == 'new'


def test_resume_resolution(tmp_path):
    out = ['--opts', 'OUTPUT', str(tmp_path)]
    cfg = load_config(TOY_CFG, out[1:] + ['TAG', 'r'])
    assert resolve_resume(cfg) is None
    os.makedirs(cfg.OUTPUT)
    write_checkpoint(cfg.OUTPUT, ['last.pth'], {'model': {'w': torch.ones(1)}, 'epoch': 0})
    assert resolve_resume(cfg) == os.path.join(cfg.OUTPUT, 'last.pth')  # auto-resume
    explicit = load_config(TOY_CFG, out[1:] + ['TAG', 'r'], resume='/some/explicit.pth')
    assert resolve_resume(explicit) == '/some/explicit.pth'  # never overridden by last.pth
    off = load_config(TOY_CFG, out[1:] + ['TAG', 'r', 'TRAIN.AUTO_RESUME', 'False'])
    assert resolve_resume(off) is None
    ev = load_config(TOY_CFG, out[1:] + ['TAG', 'r'], eval=True)
    with pytest.raises(ConfigError, match="--eval needs"):
        resolve_resume(ev)  # auto-resume never applies to --eval
    ev2 = load_config(TOY_CFG, out[1:] + ['TAG', 'r'], eval=True, resume='/x.pth')
    assert resolve_resume(ev2) == '/x.pth'


# ------------------------------------------------------------------------------------------------ misc
def test_skip_first_batches_yields_the_rest_of_the_epoch():
    class EpochSampler(torch.utils.data.Sampler):  # order is a function of the epoch, like the train sampler
        epoch = 0

        def __iter__(self):
            return iter(torch.randperm(20, generator=torch.Generator().manual_seed(self.epoch)).tolist())

        def __len__(self):
            return 20

    loader = torch.utils.data.DataLoader(torch.arange(20).float(), batch_size=3, sampler=EpochSampler(),
                                         drop_last=True)
    loader.sampler.epoch = 7
    full = [b.tolist() for b in loader]
    rest = skip_first_batches(loader, 2)
    assert [b.tolist() for b in rest] == full[2:] and len(rest) == len(loader) - 2 == 4
    assert skip_first_batches(loader, 0) is loader


def test_preemption_flag_catches_sigterm():
    import signal
    flag = PreemptionFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signal_name == 'SIGTERM'
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) is not flag._handle


def test_non_finite_weights_are_refused_before_a_checkpoint():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    check_finite_weights(model, 'epoch 0 update 0')            # finite: nothing happens
    with torch.no_grad():
        model[0].weight[1, 2] = float('inf')
        model[1].running_var[0] = float('nan')
    with pytest.raises(NonFiniteLossError, match=r'^2 weight tensor\(s\) are no longer finite at epoch 3 update 1 '
                                                 r'\(0\.weight, 1\.running_var\); no checkpoint was written'):
        check_finite_weights(model, 'epoch 3 update 1')


def test_small_helpers():
    m = AverageMeter()
    m.update(2.0, n=3)
    m.update(6.0)
    assert m.avg == 3.0 and m.val == 6.0
    assert format_duration(3725) == '1:02:05'


def test_optimizer_state_loads_only_when_it_fits():
    from engine.resume import load_optimizer_state
    params = [nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(1))]
    adam = torch.optim.AdamW([{'params': params[:1]}, {'params': params[1:], 'weight_decay': 0.0}], lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    adam.step()
    sgd = torch.optim.SGD([{'params': params[:1]}, {'params': params[1:]}], lr=0.1, momentum=0.9)
    assert not load_optimizer_state(sgd, adam.state_dict())  # AdamW state into SGD: refused, SGD still works
    sgd.step()
    adam2 = torch.optim.AdamW([{'params': params[:1]}, {'params': params[1:], 'weight_decay': 0.0}], lr=0.1,
                              weight_decay=0.5)
    assert load_optimizer_state(adam2, adam.state_dict())
    assert adam2.param_groups[0]['weight_decay'] == 0.5  # hyper-parameters follow today's config
    assert torch.equal(adam2.state[params[0]]['exp_avg'], adam.state[params[0]]['exp_avg'])
    fused = torch.optim.AdamW([{'params': params}], lr=0.1)
    assert not load_optimizer_state(fused, adam.state_dict())  # other grouping


def test_weight_init_schemes():
    from engine.weight_init import apply_weight_init
    net = _Net()
    before = net.head.weight.clone()
    apply_weight_init(net, 'original')
    assert torch.equal(net.head.weight, before)
    net.head.bias.data.fill_(1.0)
    apply_weight_init(net, 'xavier')
    bound = math.sqrt(6 / (4 + 2))
    assert not torch.equal(net.head.weight, before) and net.head.weight.abs().max() <= bound
    assert net.head.bias.abs().sum() == 0
    with pytest.raises(ConfigError, match='MODEL.INIT'):
        apply_weight_init(net, 'kaiming')

"""The parts of the training engine: loss set, checkpointer, callbacks (TensorBoard),
fine-tuning rounds, and where flag names appear in error messages."""
import copy
import csv
import os
from types import SimpleNamespace

import pytest
import torch
from synthetic_images import write_smooth_images
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from models import IMDN, RFDN, BranchRFDN
from utils.data import TrainingSet, find_training_pairs
from utils.engine.callbacks import LOG_FIELDS, CsvLog, TensorBoardLog
from utils.engine.checkpointer import Checkpointer, StateMismatchError, TrainingState
from utils.engine.finetune import FinetuneSettings, make_finetuner
from utils.engine.losses import LossSet
from utils.engine.training import NonFiniteLossError, TrainConfig, Trainer, select_trainable
from utils.io.checkpoint import save_state_dict
from utils.io.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')



# ------------------------------------------------------------------------------ LossSet
def test_loss_set_is_the_weighted_sum_of_its_terms():
    g = torch.Generator().manual_seed(0)
    sr = (torch.rand(2, 3, 8, 8, generator=g) * 255).requires_grad_(True)
    hr = torch.rand(2, 3, 8, 8, generator=g)
    teacher = torch.rand(2, 3, 8, 8, generator=g) * 255
    cfg = SimpleNamespace(loss='l2', pixel_weight=0.5, distill='output', distill_weight=2.0, feature_weight=0)
    losses = LossSet.from_config(cfg, 255.0)
    assert losses.needs_output and losses.needs_teacher_output and not losses.needs_features
    out = losses(sr, hr, teacher_out=teacher)
    pixel = ((sr.detach() / 255 - hr) ** 2).mean()
    distill = (sr.detach() - teacher).abs().mean() / 255
    assert set(out) == {'pixel', 'distill', 'total'}
    assert torch.allclose(out['pixel'], pixel, rtol=1e-6)
    assert torch.allclose(out['distill'], distill, rtol=1e-6)
    assert torch.allclose(out['total'], 0.5 * pixel + 2.0 * distill, rtol=1e-6)
    assert out['total'].requires_grad and not out['pixel'].requires_grad   # only the total carries the graph

    feats = [torch.rand(1, 4, 5, 5, generator=g) * 255 for _ in range(3)]
    targets = [torch.rand(1, 4, 5, 5, generator=g) * 255 for _ in range(3)]
    cfg = SimpleNamespace(loss='l1', pixel_weight=0, distill='features', distill_weight=0.25, feature_weight=0)
    losses = LossSet.from_config(cfg, 255.0)
    assert [name for name, _, _ in losses.terms] == ['distill']            # weight 0: no pixel term
    assert losses.needs_features and losses.needs_teacher_features and not losses.needs_output
    out = losses(None, hr, features=feats, teacher_features=targets)
    by_hand = sum((f - t).abs().mean() for f, t in zip(feats, targets)) / 3 / 255
    assert torch.allclose(out['total'], 0.25 * by_hand, rtol=1e-6)


def test_feature_term_beside_output_distillation():
    g = torch.Generator().manual_seed(1)
    sr, teacher = torch.rand(2, 3, 8, 8, generator=g) * 255, torch.rand(2, 3, 8, 8, generator=g) * 255
    hr = torch.rand(2, 3, 8, 8, generator=g)
    feats = [torch.rand(2, 4, 2, 2, generator=g) * 255 for _ in range(2)]
    targets = [torch.rand(2, 4, 2, 2, generator=g) * 255 for _ in range(2)]
    cfg = SimpleNamespace(loss='l1', pixel_weight=1, distill='output', distill_weight=1, feature_weight=0.5)
    losses = LossSet.from_config(cfg, 255.0)
    assert [name for name, _, _ in losses.terms] == ['pixel', 'distill', 'features']
    assert losses.needs_output and losses.needs_features and losses.needs_teacher_features
    out = losses(sr, hr, teacher_out=teacher, features=feats, teacher_features=targets)
    features = sum((f - t).abs().mean() for f, t in zip(feats, targets)) / 2 / 255
    assert torch.allclose(out['features'], features, rtol=1e-6)
    assert torch.allclose(out['total'], out['pixel'] + out['distill'] + 0.5 * features, rtol=1e-6)
    with pytest.raises(UserError, match='already the distillation term'):
        LossSet.from_config(SimpleNamespace(**{**vars(cfg), 'distill': 'features'}), 255.0)


@pytest.mark.parametrize('family', [RFDN, BranchRFDN])
def test_output_and_features_equal_the_two_separate_passes(family):
    torch.manual_seed(0)
    model = family(nf=8, num_modules=3).eval()
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        out, feats = model.output_and_features(x)
        assert torch.equal(out, model(x))
        separate = model.distillation_features(x)
    assert len(feats) == len(separate) == 2
    assert all(torch.equal(a, b) for a, b in zip(feats, separate))


def test_trainer_feature_term_moves_the_branch_inputs_only_through_its_gradient(tmp_path):
    """With output distillation alone the tail is free; the feature term adds gradient to the
    SRFDBs pulling their outputs towards the teacher's block outputs."""
    torch.manual_seed(0)
    teacher = RFDN(nf=8, num_modules=3)
    student = BranchRFDN.from_rfdn(teacher)
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)

    def srfdb_grad(feature_weight, tmp):
        cfg = TrainConfig(out_dir=str(tmp_path / tmp), data_dirs=[], pixel_weight=0, distill='output',
                          feature_weight=feature_weight, workers=0, progress=False)
        trainer = Trainer(copy.deepcopy(student), cfg, teacher, train_set=[], val_set=None)
        terms = trainer.losses(lr, hr)
        terms['total'].backward()
        return terms, trainer.model.S1.c5.weight.grad.clone()

    base_terms, base = srfdb_grad(0.0, 'a')
    terms, with_features = srfdb_grad(1.0, 'b')
    assert 'features' not in base_terms and terms['features'] > 0
    assert torch.allclose(terms['distill'], base_terms['distill'])
    assert not torch.allclose(base, with_features)


def test_loss_set_rejects_unknown_or_empty_sets():
    def config(**kwargs):
        base = {'loss': 'l1', 'pixel_weight': 1, 'distill': 'none', 'distill_weight': 1, 'feature_weight': 0}
        return SimpleNamespace(**{**base, **kwargs})
    with pytest.raises(UserError, match='unknown pixel loss "huber"'):
        LossSet.from_config(config(loss='huber'), 1.0)
    with pytest.raises(UserError, match='unknown distillation'):
        LossSet.from_config(config(distill='logits'), 1.0)
    with pytest.raises(UserError, match='no loss term'):
        LossSet.from_config(config(pixel_weight=0), 1.0)


# ------------------------------------------------------------------------- Checkpointer
def _live(seed):
    torch.manual_seed(seed)
    model = RFDN(nf=8, num_modules=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    return TrainingState(model, opt, sched, copy.deepcopy(model))


def _one_step(live):
    live.model(torch.rand(1, 3, 24, 24) * 255).mean().backward()
    live.optimizer.step()
    live.scheduler.step()
    with torch.no_grad():
        for e in live.ema.parameters():
            e.mul_(0.5)


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpointer_round_trip(tmp_path):
    run = tmp_path / 'run'
    live = _live(0)
    _one_step(live)
    ck = Checkpointer(str(run))
    assert ck.restore(live) is None                                   # nothing saved yet
    ck.save(live, step=7, best_psnr=30.5, export=live.ema)
    saved = {k: v.clone() for k, v in live.model.state_dict().items()}
    saved_ema = {k: v.clone() for k, v in live.ema.state_dict().items()}
    saved_opt = copy.deepcopy(live.optimizer.state_dict())
    next_draw = torch.rand(4)                                         # what the saved RNG gives next
    _one_step(live)                                                   # the run goes on, then is killed

    fresh = _live(1)                                                  # a new process, other weights
    assert Checkpointer(str(run)).restore(fresh) == (7, 30.5)
    assert _same(fresh.model.state_dict(), saved) and _same(fresh.ema.state_dict(), saved_ema)
    opt = fresh.optimizer.state_dict()
    assert opt['param_groups'] == saved_opt['param_groups']
    assert all(_same(opt['state'][i], saved_opt['state'][i]) for i in saved_opt['state'])
    assert fresh.scheduler.last_epoch == 1 and fresh.scheduler.get_last_lr() == [0.5e-3]
    assert torch.equal(torch.rand(4), next_draw)
    # model_last.pth: the exported (EMA) weights as a plain state_dict
    assert _same(torch.load(run / 'model_last.pth', weights_only=True), saved_ema)
    assert not [f for f in os.listdir(run) if f.startswith('.tmp_')]

    (run / '.tmp_k9x2ab1c.pth').write_bytes(b'PK\x03\x04 half-written')
    assert ck.remove_stale_temp_files() == ['.tmp_k9x2ab1c.pth'] and not (run / '.tmp_k9x2ab1c.pth').exists()
    other = IMDN(nc=8, nb=1)
    opt = torch.optim.Adam(other.parameters())
    with pytest.raises(StateMismatchError) as caught:
        ck.restore(TrainingState(other, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)))
    message = str(caught.value)
    assert 'does not fit IMDN' in message and 'missing' in message and '--' not in message
    assert '\n' not in message


# ---------------------------------------------------------------------------- callbacks
def _scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_csv_log_carries_every_term_and_keeps_an_existing_header(tmp_path):
    fresh = CsvLog(str(tmp_path / 'fresh.csv'))
    fresh.on_log(10, {'step': 10, 'loss': 0.5, 'pixel': 0.3, 'distill': 0.1, 'features': 0.1})
    with open(tmp_path / 'fresh.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert rows[0]['features'] == '0.1' and list(rows[0]) == LOG_FIELDS

    old_header = ['step', 'time', 'lr', 'loss', 'pixel', 'distill', 'patch', 'data_ms', 'step_ms', 'val_psnr_y']
    (tmp_path / 'old.csv').write_text(','.join(old_header) + '\n10,1.0,0.1,0.5,0.3,0.2,64,1,2,\n')
    resumed = CsvLog(str(tmp_path / 'old.csv'))
    resumed.on_log(20, {'step': 20, 'loss': 0.4, 'pixel': 0.3, 'distill': 0.1, 'patch': 64})
    resumed.on_validation(20, 30.5, 30.5)
    with open(tmp_path / 'old.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == old_header and all(len(row) == len(old_header) for row in rows)
    assert rows[2][old_header.index('patch')] == '64' and rows[3][-1] == '30.5'


def test_csv_log_of_a_resumed_run_drops_the_rows_after_its_checkpoint(tmp_path):
    path = tmp_path / 'log.csv'
    log = CsvLog(str(path))
    for step in (10, 20, 30, 40):
        log.on_log(step, {'step': step, 'loss': step / 100})
    log.on_validation(20, 30.5, 30.5)
    log.on_validation(40, 30.7, 30.7)
    resumed = CsvLog(str(path))
    resumed.on_fit_start(SimpleNamespace(step=20))  # the checkpoint was at step 20
    resumed.on_log(30, {'step': 30, 'loss': 0.25})
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['step'], r['loss'], r['val_psnr_y']) for r in rows] == [
        ('10', '0.1', ''), ('20', '0.2', ''), ('20', '', '30.5'), ('30', '0.25', '')]


def test_csv_log_of_a_run_killed_before_its_first_checkpoint_is_started_anew(tmp_path, capsys):
    path = tmp_path / 'log.csv'
    killed = CsvLog(str(path))
    for step in (10, 20, 30):
        killed.on_log(step, {'step': step, 'loss': step / 100})
    restarted = CsvLog(str(path))
    restarted.on_fit_start(SimpleNamespace(step=0))  # no checkpoint: the run starts at step 0
    assert 'dropped 3 row(s)' in capsys.readouterr().out
    restarted.on_log(10, {'step': 10, 'loss': 0.5})
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['step'], r['loss']) for r in rows] == [('10', '0.5')] and list(rows[0]) == LOG_FIELDS


def test_tensorboard_callback_writes_the_logged_scalars(tmp_path):
    tb = TensorBoardLog(str(tmp_path / 'tb'))
    tb.on_fit_start(SimpleNamespace(step=0))
    tb.on_log(1, {'step': 1, 'time': 0.1, 'lr': 1e-3, 'loss': 0.5, 'pixel': 0.25, 'patch': 16,
                  'data_ms': 1.5, 'step_ms': 4.0})
    tb.on_log(2, {'step': 2, 'time': 0.2, 'lr': 5e-4, 'loss': 0.4, 'pixel': 0.2, 'patch': 16,
                  'data_ms': 1.0, 'step_ms': 3.0})
    tb.on_validation(2, 27.25, 27.25)
    tb.on_fit_end({})
    events = list((tmp_path / 'tb').glob('events.out.tfevents.*'))
    assert len(events) == 1 and events[0].stat().st_size > 0
    scalars = _scalars(tmp_path / 'tb')
    assert set(scalars) == {'train/lr', 'train/loss', 'train/pixel', 'train/data_ms', 'train/step_ms',
                            'val/psnr_y'}
    assert scalars['train/loss'] == [(1, pytest.approx(0.5)), (2, pytest.approx(0.4))]
    assert scalars['train/lr'] == [(1, pytest.approx(1e-3)), (2, pytest.approx(5e-4))]
    assert scalars['val/psnr_y'] == [(2, pytest.approx(27.25))]


def test_train_tensorboard_flag_logs_what_log_csv_holds(tmp_path):
    data = write_smooth_images(tmp_path / 'data', [(64, 64), (64, 80)])
    val = write_smooth_images(tmp_path / 'val', [(48, 48)], seed=1)
    torch.manual_seed(0)
    save_state_dict(RFDN(nf=8, num_modules=1).state_dict(), str(tmp_path / 'tiny.pth'))
    out = tmp_path / 'run'
    assert train.main(['--model', 'RFDN', '--pretrained', str(tmp_path / 'tiny.pth'), '--data_dir', str(data),
                       '--val_hr_dir', str(val), '--out_dir', str(out), '--batch_size', '2',
                       '--patch_size', '16',
                       '--iters', '3', '--val_every', '3', '--log_every', '1', '--workers', '0',
                       '--no_progress', '--tensorboard']) == 0
    rows = list(csv.DictReader(open(out / 'log.csv')))
    scalars = _scalars(out / 'tb')
    assert scalars['train/loss'] == [(int(r['step']), pytest.approx(float(r['loss']), rel=1e-6))
                                     for r in rows if r['loss']]
    assert [(s, round(v, 4)) for s, v in scalars['val/psnr_y']] == \
        [(3, pytest.approx(float(r['val_psnr_y']), abs=1e-4)) for r in rows if r['val_psnr_y']]


# ------------------------------------------------------------------------- fine-tuning
def test_finetuner_trains_in_place_and_leaves_no_scratch(tmp_path):
    data = write_smooth_images(tmp_path / 'data', [(64, 64)])
    cache = TrainingSet(find_training_pairs([str(data)], 4), 4, 16, progress=False)
    torch.manual_seed(0)
    model = RFDN(nf=8, num_modules=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = FinetuneSettings(iters=2, lr=1e-2, batch_size=2, patch_size=16, workers=0, progress=False)
    assert make_finetuner(FinetuneSettings(iters=0), cache, str(tmp_path / 'run')) is None
    finetune = make_finetuner(settings, cache, str(tmp_path / 'run'), teacher=copy.deepcopy(model).eval())
    calls = []
    summary = finetune(model, post_step=lambda m: calls.append(m is model))
    assert summary['steps'] == 2 and calls == [True, True]
    assert not _same(model.state_dict(), before)
    assert os.listdir(tmp_path / 'run') == []                        # the scratch folder is gone


# ------------------------------------------------------- library messages vs CLI flags
def test_library_errors_name_no_flags_and_scripts_add_them(tmp_path):
    data = write_smooth_images(tmp_path / 'data', [(64, 64)])
    torch.manual_seed(0)
    model = RFDN(nf=8, num_modules=1)
    for kwargs in ({'distill': 'output'}, {'iters': 0}):
        cfg = TrainConfig(out_dir=str(tmp_path / 'lib'), data_dirs=[str(data)], patch_size=16, workers=0,
                          progress=False, **kwargs)
        with pytest.raises(UserError) as caught:
            Trainer(model, cfg)
        assert '--' not in str(caught.value)
    with pytest.raises(UserError) as caught:
        select_trainable(model, ['nothing*'], None)
    assert '--' not in str(caught.value)

    nan = {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v
           for k, v in model.state_dict().items()}
    save_state_dict(nan, str(tmp_path / 'nan.pth'))
    cfg = TrainConfig(out_dir=str(tmp_path / 'lib'), data_dirs=[str(data)], batch_size=2, patch_size=16,
                      iters=2, workers=0, progress=False, val_every=0)
    broken = RFDN(nf=8, num_modules=1)
    broken.load_state_dict(nan)
    with pytest.raises(NonFiniteLossError) as caught:
        Trainer(broken, cfg).fit()
    assert str(caught.value).startswith('loss is nan at step 0') and '--' not in str(caught.value)

    argv = ['--model', 'RFDN', '--data_dir', str(data), '--val_hr_dir', 'none', '--batch_size', '2',
            '--patch_size', '16', '--iters', '2', '--workers', '0', '--no_progress']
    for i, (extra, message) in enumerate((
            (['--pretrained', str(tmp_path / 'nan.pth')], '(lower --lr or use --grad_clip)'),
            (['--trainable', 'nothing*'], 'no parameter left to train: check --trainable / --freeze'),
            (['--pixel_weight', '0'], '--pixel_weight 0 needs --distill'))):
        with pytest.raises(UserError) as caught:
            train.main([*argv, *extra, '--out_dir', str(tmp_path / f'cli{i}')])
        assert message in str(caught.value) and '\n' not in str(caught.value)

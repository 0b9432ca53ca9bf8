"Tests of lessons_lib.unet and lessons_lib.segdata: shapes, hooks, digit scenes, metrics, bad input, the CLI."
import csv, gc, json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lessons_lib.core import Config
from lessons_lib.unet import Unet, UnetSizeError, body_of, count_hooks, handwritten_encoder, seg_learner
from lessons_lib.metrics import acc_nonvoid, seg_confusion, miou_from_confusion, seg_metrics
from lessons_lib.layers import icnr_init, PixelShuffleICNR
from lessons_lib.losses import PixelCrossEntropy
from lessons_lib.train import BF16Autocast, precision_cbs, fused_adam
from lessons_lib.segdata import (SCENE_CODES, SCENE_VOID, SegDataError, check_seg_folder, digit_scene, digit_scenes_path,
                                 label_file, load_digits, write_digit_scenes, seg_dls)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    "An isolated LESSONS_CACHE for the module."
    d = tmp_path_factory.mktemp('cache'); old = os.environ.get('LESSONS_CACHE')
    os.environ['LESSONS_CACHE'] = str(d)
    yield d
    if old is None: del os.environ['LESSONS_CACHE']
    else: os.environ['LESSONS_CACHE'] = old


# ---- the model ----

@pytest.mark.parametrize('encoder', ['handwritten', 'resnet18'])
@pytest.mark.parametrize('size', [(32, 32), (64, 96), (128, 64)])
def test_output_shape_equals_input_shape(encoder, size):
    m = Unet(encoder, n_out=5, cfg=Config(pretrained='off')).eval()
    with torch.no_grad(): out = m(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)


def test_size_not_multiple_of_stride_is_a_clear_error():
    m = Unet('handwritten', n_out=3).eval()
    with pytest.raises(UnetSizeError, match='input size 70x64 is not divisible by .* stride 32'):
        m(torch.randn(1, 3, 70, 64))
    padded = Unet('handwritten', n_out=3, pad_input=True).eval()
    with torch.no_grad(): assert padded(torch.randn(1, 3, 70, 50)).shape == (1, 3, 70, 50)


def test_superres_options_and_y_range():
    m = Unet('handwritten', n_out=3, y_range=(-1., 2.), blur=True, self_attention=True, norm_type='weight')
    out = m(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64) and out.min() >= -1 and out.max() <= 2


def test_no_hook_growth_over_repeated_construction():
    enc = body_of(handwritten_encoder())
    global_hooks = lambda: len(torch.nn.modules.module._global_forward_hooks) + len(torch.nn.modules.module._global_forward_pre_hooks)
    before, g0 = count_hooks(enc), global_hooks()
    for _ in range(5):
        m = Unet(enc, n_out=4)
        m(torch.randn(1, 3, 64, 64))
        del m
    gc.collect()
    assert count_hooks(enc) == before == 0 and global_hooks() == g0


def test_icnr_pixel_shuffle_is_nearest_upsampling_at_init():
    w = icnr_init(torch.empty(12, 5, 3, 3))
    x = torch.randn(1, 5, 6, 6)
    torch.testing.assert_close(F.pixel_shuffle(F.conv2d(x, w, padding=1), 2),
                               F.interpolate(F.conv2d(x, w[::4], padding=1), scale_factor=2, mode='nearest'))
    up = PixelShuffleICNR(4, 4).eval()
    with torch.no_grad(): o = up(torch.ones(1, 4, 8, 8))
    assert o.shape == (1, 4, 16, 16) and o[..., 2:-2, 2:-2].std(dim=(-2, -1)).max() < 1e-5     # flat per channel


# ---- metrics ----

def test_metrics_on_hand_made_tensors_ignore_void():
    targ = torch.tensor([[0, 0, 1, 1, 2, 2]])           # 2 is void
    pred = torch.tensor([[0, 1, 1, 1, 0, 1]])
    logits = F.one_hot(pred, 3).permute(0, 2, 1).float()
    assert acc_nonvoid(logits, targ, void_code=2).item() == pytest.approx(0.75)
    cm = seg_confusion(pred, targ, 3, void_code=2)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert miou_from_confusion(cm, void_code=2) == pytest.approx((1/2 + 2/3) / 2)
    # changing predictions on void pixels changes nothing
    pred2 = pred.clone(); pred2[0, 4:] = 1
    assert miou_from_confusion(seg_confusion(pred2, targ, 3, 2), 2) == pytest.approx((1/2 + 2/3) / 2)
    # a perfect prediction scores 1; a class never predicted scores 0 in the mean
    assert miou_from_confusion(seg_confusion(targ, targ, 3, 2), 2) == 1
    assert miou_from_confusion(seg_confusion(torch.zeros_like(targ), targ, 3, 2), 2) == pytest.approx(0.5 / 2)


def test_fastai_metrics_accumulate_over_batches():
    targ = torch.tensor([[0, 1, 1, 2]]); logits = F.one_hot(torch.tensor([[0, 1, 0, 0]]), 3).permute(0, 2, 1).float()
    class L: pred, y = logits, targ
    acc, miou = seg_metrics(3, void_code=2)
    for mt in (acc, miou):
        mt.reset(); mt.accumulate(L()); mt.accumulate(L())
    assert acc.value == pytest.approx(2/3) and miou.value == pytest.approx((1/2 + 1/2) / 2)



def test_pixel_cross_entropy_is_fastais_flat_loss_and_ignores_void():
    from fastai.losses import CrossEntropyLossFlat
    torch.manual_seed(0)
    logits, targ = torch.randn(3, 5, 8, 8, requires_grad=True), torch.randint(0, 5, (3, 8, 8))
    ours, fastai = PixelCrossEntropy(4)(logits, targ), CrossEntropyLossFlat(axis=1, ignore_index=4)(logits, targ)
    assert torch.allclose(ours, fastai, atol=1e-6)
    g_ours, = torch.autograd.grad(ours, logits); g_fastai, = torch.autograd.grad(fastai, logits)
    assert torch.allclose(g_ours, g_fastai, atol=1e-7)
    moved = logits.detach().clone()
    void = targ == 4
    moved[:, 0][void] += 10                                               # predictions at void pixels do not count
    assert torch.allclose(PixelCrossEntropy(4)(moved, targ), ours.detach(), atol=1e-6)
    assert (targ == 4).any() and not torch.allclose(PixelCrossEntropy()(moved, targ), PixelCrossEntropy()(logits.detach(), targ))
    assert torch.equal(PixelCrossEntropy().decodes(logits), logits.argmax(1))


def test_fused_adam_steps_like_fastais_adam_with_groups_and_freezing():
    "Two parameter groups with their own learning rates, the first frozen for a while: the same weights as fastai's Adam."
    from fastai.optimizer import Adam
    def train(make_opt):
        torch.manual_seed(0); model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        opt = make_opt([list(model[0].parameters()), list(model[2].parameters())], lr=1e-2, wd=0.1)
        opt.set_hyper('lr', [1e-3, 1e-2])
        for i in range(6):
            if i == 0: opt.freeze()
            if i == 3: opt.unfreeze()
            F.mse_loss(model(torch.randn(16, 4)), torch.randn(16, 2)).backward(); opt.step(); opt.zero_grad()
        return model
    ours, fastai = train(fused_adam), train(Adam)
    torch.manual_seed(0); start = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    for a, b, s in zip(ours.parameters(), fastai.parameters(), start.parameters()):
        assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a, s)


def test_bf16_autocast_trains_in_bfloat16_and_reports_float32():
    "`BF16Autocast` runs the forward pass in bfloat16 on the CPU, hands float32 predictions on, and leaves no autocast open."
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.callback.core import Callback
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8, 32, 32))
    dl = DataLoader(list(zip(x, y)), bs=4)
    dls = DataLoaders(dl, DataLoader(list(zip(x, y)), bs=4), device='cpu')
    seen = {}
    class Spy(Callback):
        order = 11                                    # after BF16Autocast's order 10
        def after_pred(self):
            seen.setdefault('pred', self.pred.dtype)
            seen.setdefault('inside', torch.is_autocast_enabled('cpu'))
    model = Unet(handwritten_encoder(), 3)
    learn = seg_learner(dls, model, 3, amp=True, cbs=[Spy()])
    assert any(isinstance(cb, BF16Autocast) for cb in learn.cbs)
    before = [p.detach().clone() for p in model.parameters()]
    learn.fit(1, 1e-3)
    assert seen == dict(pred=torch.float32, inside=True)
    assert not torch.is_autocast_enabled('cpu')
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not any(isinstance(cb, BF16Autocast) for cb in seg_learner(dls, Unet(handwritten_encoder(), 3), 3, amp=None).cbs)


# ---- digit scenes ----

def test_digit_scene_deterministic_and_mask_matches_image():
    x, y, _ = load_digits('training')
    a = digit_scene(x, y, np.random.default_rng([7, 3]))
    b = digit_scene(x, y, np.random.default_rng([7, 3]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    img, mask, used = a
    assert img.shape[:2] == mask.shape
    assert set(np.unique(mask)) <= set(range(len(SCENE_CODES)))
    digit_classes = set(np.unique(mask)) - {0, SCENE_VOID}
    assert digit_classes and digit_classes <= {int(y[i]) + 1 for i in used}
    lum = img.astype(float).mean(-1)
    assert lum[(mask >= 1) & (mask <= 10)].mean() > lum[mask == 0].mean() + 60      # digits are the bright pixels


def test_digit_scenes_folder_is_camvid_layout_and_splits_digits(cache):
    p = digit_scenes_path(10, 5)
    assert (p/'codes.txt').read_text().split() == SCENE_CODES
    valid = (p/'valid.txt').read_text().split()
    assert valid == [f'scene_{k:05d}.png' for k in range(10, 15)]
    for f in (p/'images').iterdir():
        assert Image.open(f).size == Image.open(label_file(f)).size
    rows = list(csv.DictReader(open(p/'digits.csv')))
    ids = {s: {int(i) for r in rows if r['split'] == s for i in r['mnist_ids'].split()} for s in ('train', 'valid')}
    assert ids['train'] and ids['valid'] and not ids['train'] & ids['valid']
    again = write_digit_scenes(cache/'again', 10, 5)
    for f in ('scene_00000.png', 'scene_00012.png'):
        assert Image.open(again/'images'/f).tobytes() == Image.open(p/'images'/f).tobytes()


def test_bad_segmentation_folders_name_the_file(cache, tmp_path):
    bad = tmp_path/'bad'; shutil.copytree(digit_scenes_path(10, 5), bad)
    lf = bad/'labels'/'scene_00004_P.png'
    def fails(match):
        for load in (check_seg_folder, seg_dls, lambda p: seg_dls(p, in_memory=False)):
            with pytest.raises(SegDataError, match=match): load(bad)
    Image.fromarray(np.full((64, 64), 40, np.uint8)).save(lf)
    fails('scene_00004_P.png has class value 40')
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(lf)
    fails('scene_00004_P.png is 64x32 but its image')
    lf.unlink()
    fails('label file .*scene_00004_P.png for image .*scene_00004.png is missing')


def test_seg_dls_same_batches_from_memory_and_files_in_file_name_order(cache):
    p = digit_scenes_path(10, 5)
    mem, files = seg_dls(p, bs=5), seg_dls(p, bs=5, in_memory=False)
    for dls in (mem, files):
        names = [f.name for f in dls.train.items] + [f.name for f in dls.valid.items]
        assert names == sorted(f.name for f in (p/'images').iterdir())       # not the file system's listing order
    (mx, my), (fx, fy) = mem.valid.one_batch(), files.valid.one_batch()
    assert type(mx) is type(fx) and type(my) is type(fy) and mx.shape == (5, 3, 64, 64) and my.shape == (5, 64, 64)
    assert torch.equal(mx, fx) and torch.equal(my, fy)


def test_palette_masks_read_as_class_indices_from_memory_and_files(cache, tmp_path):
    "Masks saved in palette mode (P) give their indices, not the palette colours' grey levels, on both paths."
    src = digit_scenes_path(10, 5); pal = tmp_path/'pal'; shutil.copytree(src, pal)
    palette = [v for i in range(256) for v in (255 - (37 * i) % 256, (91 * i) % 256, 7 * i % 256)]
    for lf in (pal/'labels').iterdir():
        m = Image.open(lf); assert m.mode == 'L'
        p = Image.frombytes('P', m.size, m.tobytes()); p.putpalette(palette); p.save(lf)
        assert Image.open(lf).mode == 'P' and np.array_equal(np.asarray(Image.open(lf)), np.asarray(m))
        assert not np.array_equal(np.asarray(Image.open(lf).convert('L')), np.asarray(m))      # grey levels differ
    for in_memory in (True, False):
        want, got = seg_dls(src, bs=5, in_memory=in_memory).valid.one_batch()[1], seg_dls(pal, bs=5, in_memory=in_memory).valid.one_batch()[1]
        assert torch.equal(got, want), in_memory


# ---- the CLI ----

def test_lesson7_unet_tiny_writes_outputs(tiny_run):
    tmp_path, r = tiny_run('unet')
    m = json.loads((tmp_path/'unet'/'metrics.json').read_text())
    for k in ('acc_nonvoid', 'miou', 'dynamic_unet_acc', 'params', 'train_seconds', 'throughput_ratio', 'unet_noskip_acc',
              'unet_noskip_miou'):
        assert k in m, k
    assert 0 <= m['acc_nonvoid'] <= 1 and m['params'] > 0 and 0 <= m['unet_noskip_acc'] <= 1 and 0 <= m['unet_noskip_miou'] <= 1
    assert (tmp_path/'unet'/'unet_results.png').is_file() and (tmp_path/'unet'/'noskip.pth').is_file()   # trained, checkpointed

def test_unet_without_skips_feeds_its_decoder_zeros():
    "Lesson 2's ablation: the same layers and weights, but nothing of the encoder's features reaches the decoder's blocks."
    from lessons_lib.unet import Unet
    torch.manual_seed(0)
    a, b = Unet('handwritten', 5, skips=False, last_cross=False).eval(), Unet('handwritten', 5, last_cross=False).eval()
    b.load_state_dict(a.state_dict())
    seen = []
    for blk in a.blocks: blk.register_forward_pre_hook(lambda m, args: seen.append(float(args[1].abs().max())))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): y_a, y_b = a(x), b(x)
    assert len(seen) == len(a.blocks) and max(seen) == 0
    assert not torch.allclose(y_a, y_b)                          # with the same weights, the skips change the output


def test_precision_cbs_adds_bf16_autocast_as_asked():
    "`precision_cbs` adds one `BF16Autocast` when asked, none when not; `use_bf16` decides from the config and the device."
    from lessons_lib.core import bf16_is_fast, use_bf16
    other = object()
    assert [type(c) for c in precision_cbs(True, cbs=[other])][0] is BF16Autocast
    assert precision_cbs(True, cbs=[other])[1] is other
    assert precision_cbs(False, cbs=[other]) == [other]
    assert use_bf16(Config(device='cpu')) == bf16_is_fast(torch.device('cpu'))
    assert use_bf16(Config(bf16='off')) is False and use_bf16(Config(bf16='on')) is True


# ---- the results section's figures and numbers ----

def test_class_iou_and_skip_ablation_paragraph_follow_the_numbers():
    "`class_iou` averages to the mean IoU; `skip_ablation_md` states this matrix pair's numbers, whichever model wins."
    from lessons_lib.unet import class_iou, skip_ablation_md
    codes, void = ['background', 'a', 'b', 'c', 'Void'], 4
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 4, (2000,), generator=g); truth[:1000] = 0                  # background is the majority
    good = torch.where(torch.rand(2000, generator=g) < 0.9, truth, torch.randint(0, 5, (2000,), generator=g))
    blob = torch.where(truth == 1, truth, torch.zeros_like(truth))                       # finds `a` only, calls the rest background
    cm_good, cm_blob = seg_confusion(good, truth, 5, void), seg_confusion(blob, truth, 5, void)
    for cm in (cm_good, cm_blob):
        iou = class_iou(cm, void)
        assert iou[void].isnan() and iou.nanmean().item() == pytest.approx(miou_from_confusion(cm, void))
    assert class_iou(cm_blob, void)[1] == 1 and class_iou(cm_blob, void)[2] == 0
    s = skip_ablation_md(cm_good, cm_blob, codes, void)
    m_good, m_blob = miou_from_confusion(cm_good, void), miou_from_confusion(cm_blob, void)
    acc_blob, base = (blob == truth).float().mean().item(), (truth == 0).float().mean().item()
    assert f'**{m_blob:.3f}** (non-void accuracy {acc_blob:.3f}), below **{m_good:.3f}**' in s, s
    assert f'Calling every pixel `background` would score an accuracy of {base:.3f}' in s, s
    assert 'on 1 of them (`a`)' in s and 'on 3 (`a`, `b`, `c`)' in s, s
    assert 'above' in skip_ablation_md(cm_blob, cm_good, codes, void)


def test_masks_figure_titles_panels_and_legend(cache):
    "`masks_figure`: a title, input | target | each model per row, a legend naming exactly the classes shown."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from lessons_lib.unet import masks_figure, valid_confusion, _valid_predictions, class_iou
    dls = seg_dls(digit_scenes_path(10, 5), bs=5)
    torch.manual_seed(0)
    learners = {name: seg_learner(dls, Unet(handwritten_encoder(), len(SCENE_CODES)), len(SCENE_CODES), SCENE_VOID)
                for name in ('U-Net', 'other')}
    fig = masks_figure(learners, dls, SCENE_CODES, n=3, void_code=SCENE_VOID, title='a title')
    try:
        assert fig._suptitle.get_text() == 'a title' and len(fig.axes) == 3 * 4
        assert [ax.get_title() for ax in fig.axes[:4]] == ['input', 'target', 'U-Net', 'other']
        _, yb, preds, n = _valid_predictions(learners, dls, 3)
        shown = set(yb.unique().tolist()).union(*(p.unique().tolist() for p in preds.values()))
        assert n == 3 and [t.get_text() for t in fig.legends[0].get_texts()] == [SCENE_CODES[k] for k in sorted(shown)]
    finally: plt.close(fig)
    cm = valid_confusion(learners['U-Net'])
    ys = torch.cat([y.cpu().flatten() for _, y in dls.valid])
    assert cm.sum() == (ys != SCENE_VOID).sum()                                          # every non-void pixel, once
    loss, acc, miou = learners['U-Net'].validate()
    assert (cm.diag().sum() / cm.sum()).item() == pytest.approx(acc) and class_iou(cm, SCENE_VOID).nanmean().item() == pytest.approx(miou)

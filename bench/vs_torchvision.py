#!/usr/bin/env python3
"""detpost beside torchvision's CUDA ops, on the same CUDA tensors.

Loads libdetpost.so (cuda flavor) through ctypes, binds a CUDA context to
PyTorch's current stream, and times each pair of calls with CUDA events
(warm-up first, median of repeated calls). Each row also checks that the two
answers agree. Prints a table of ratios last; --out writes the rows as JSON.
"""
import argparse
import ctypes
import json
import math
import statistics
import sys
import traceback

import torch
import torchvision

C_I64 = ctypes.c_int64
C_PTR = ctypes.c_void_p


class OverlapParams(ctypes.Structure):
    _fields_ = [("mode", ctypes.c_int), ("aligned", ctypes.c_int), ("offset", ctypes.c_float)]


class NmsParams(ctypes.Structure):
    _fields_ = [("method", ctypes.c_int), ("iou_threshold", ctypes.c_float), ("score_threshold", ctypes.c_float),
                ("max_output", C_I64), ("sigma", ctypes.c_float), ("min_score", ctypes.c_float),
                ("offset", ctypes.c_float)]


class BatchedNmsParams(ctypes.Structure):
    _fields_ = [("nms", NmsParams), ("pre_nms_top_k", C_I64), ("max_per_class", C_I64), ("max_per_image", C_I64),
                ("background_class", C_I64), ("class_agnostic", ctypes.c_int), ("boxes_per_class", ctypes.c_int),
                ("box_coding", ctypes.c_int)]


class RoiParams(ctypes.Structure):
    _fields_ = [("pooled_h", ctypes.c_int), ("pooled_w", ctypes.c_int), ("spatial_scale", ctypes.c_float),
                ("sampling_ratio", ctypes.c_int), ("aligned", ctypes.c_int), ("mode", ctypes.c_int),
                ("layout", ctypes.c_int), ("dtype", ctypes.c_int), ("deterministic", ctypes.c_int)]


class PyramidLevel(ctypes.Structure):
    _fields_ = [("features", C_PTR), ("h", C_I64), ("w", C_I64), ("spatial_scale", ctypes.c_float)]


class FeaturePyramid(ctypes.Structure):
    _fields_ = [("num_levels", ctypes.c_int), ("n", C_I64), ("c", C_I64), ("layout", ctypes.c_int),
                ("dtype", ctypes.c_int), ("levels", PyramidLevel * 8), ("canonical_scale", ctypes.c_float),
                ("canonical_level", ctypes.c_int), ("eps", ctypes.c_float)]


class BoxCoder(ctypes.Structure):
    _fields_ = [("means", ctypes.c_float * 4), ("stds", ctypes.c_float * 4), ("clamp", ctypes.c_float),
                ("offset", ctypes.c_float)]


class StageParams(ctypes.Structure):
    _fields_ = [("coder", BoxCoder), ("pos_iou", ctypes.c_float), ("neg_iou", ctypes.c_float),
                ("neg_iou_lo", ctypes.c_float), ("min_pos_iou", ctypes.c_float), ("pos_fraction", ctypes.c_float),
                ("neg_pos_ub", ctypes.c_float), ("num_samples", ctypes.c_int32), ("add_gt_as_proposals", ctypes.c_int32),
                ("match_low_quality", ctypes.c_int32), ("background_label", ctypes.c_int32), ("stage", ctypes.c_int32),
                ("seed", ctypes.c_uint64)]


class Detpost:
    """The subset of the C API the comparisons call."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        lib = self.lib
        lib.detpost_version_string.restype = ctypes.c_char_p
        lib.detpost_last_error.restype = ctypes.c_char_p
        lib.detpost_last_error.argtypes = [C_PTR]
        lib.detpost_status_name.restype = ctypes.c_char_p
        lib.detpost_create.argtypes = [ctypes.POINTER(C_PTR), ctypes.c_int, ctypes.c_int]
        lib.detpost_destroy.argtypes = [C_PTR]
        lib.detpost_set_stream.argtypes = [C_PTR, C_PTR]
        lib.detpost_box_overlaps.argtypes = [C_PTR, ctypes.POINTER(OverlapParams), C_PTR, C_I64, C_PTR, C_I64,
                                             C_I64, C_PTR]
        lib.detpost_mask_iou.argtypes = [C_PTR, C_PTR, C_I64, C_PTR, C_I64, C_I64, C_PTR]
        lib.detpost_nms_params_default.restype = NmsParams
        lib.detpost_batched_nms_params_default.restype = BatchedNmsParams
        lib.detpost_nms.argtypes = [C_PTR, ctypes.POINTER(NmsParams), C_PTR, C_PTR, C_I64, C_PTR, C_PTR, C_PTR]
        lib.detpost_roi_params_default.restype = RoiParams
        lib.detpost_feature_pyramid_default.restype = FeaturePyramid
        lib.detpost_roi_align.argtypes = [C_PTR, ctypes.POINTER(RoiParams), C_PTR, C_I64, C_I64, C_I64, C_I64, C_PTR,
                                          C_I64, C_PTR]
        lib.detpost_roi_pool.argtypes = [C_PTR, ctypes.POINTER(RoiParams), C_PTR, C_I64, C_I64, C_I64, C_I64, C_PTR,
                                         C_I64, C_PTR, C_PTR]
        lib.detpost_multilevel_roi_align.argtypes = [C_PTR, ctypes.POINTER(RoiParams), ctypes.POINTER(FeaturePyramid),
                                                     C_PTR, C_I64, C_PTR, C_PTR]
        lib.detpost_stage_params_default.restype = StageParams
        lib.detpost_stage_params_default.argtypes = [ctypes.c_int]
        lib.detpost_cascade_resample.argtypes = [C_PTR, ctypes.POINTER(StageParams), C_I64, C_PTR, C_PTR, C_I64, C_PTR,
                                                 C_PTR, C_PTR, C_I64] + [C_PTR] * 7
        lib.detpost_batched_nms.argtypes = [C_PTR, ctypes.POINTER(BatchedNmsParams), C_PTR, C_PTR, C_I64, C_I64,
                                            C_I64, C_PTR, C_PTR, C_PTR, C_PTR, C_PTR]
        self.ctx = C_PTR()
        self.check(lib.detpost_create(ctypes.byref(self.ctx), 1, torch.cuda.current_device()), "detpost_create")
        self.check(lib.detpost_set_stream(self.ctx, C_PTR(torch.cuda.current_stream().cuda_stream)),
                   "detpost_set_stream")

    def check(self, status, what):
        if status != 0:
            name = self.lib.detpost_status_name(status).decode()
            raise RuntimeError(f"{what}: {name}: {self.lib.detpost_last_error(self.ctx).decode()}")

    def call(self, name, *args):
        self.check(getattr(self.lib, name)(self.ctx, *args), name)


def ptr(t):
    return C_PTR(t.data_ptr())


def gpu_median_ms(fn, reps, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def detector_boxes(n, w=1333.0, h=800.0, seed=0):
    """Clusters of boxes jittered around a few objects; every box is non-empty."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    objects = max(1, n // 50)
    centre = torch.rand(objects, 2, generator=g) * torch.tensor([w, h])
    size = (0.05 + 0.3 * torch.rand(objects, 2, generator=g)) * torch.tensor([w, h])
    pick = torch.randint(0, objects, (n,), generator=g)
    c, s = centre[pick], size[pick]
    jitter = 0.2 * (torch.rand(n, 4, generator=g) - 0.5) * s.repeat(1, 2)  # at most 10% of the box's size
    boxes = torch.cat([c - s / 2, c + s / 2], dim=1) + jitter
    return boxes.float().cuda().contiguous()


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def row(op, shape, dp_ms, tv_ms, agree, target=None, note=""):
    speedup = tv_ms / dp_ms if dp_ms > 0 else float("nan")
    if target is None:
        ok = ""
    elif "DIFFERENT" in agree:
        ok = "NO (results differ)"  # a fast wrong answer meets no target
    else:
        ok = "yes" if speedup >= target else "NO"
    return {"op": op, "shape": shape, "detpost_ms": dp_ms, "torchvision_ms": tv_ms, "speedup": speedup,
            "target": target, "meets_target": ok, "agree": agree, "note": note}


@case
def box_iou(dp, reps):
    rows = []
    for n in (1000, 4000, 10000):
        a, b = detector_boxes(n, seed=1), detector_boxes(n, seed=2)
        out = torch.empty(n, n, device="cuda")
        p = OverlapParams(0, 0, 0.0)
        run = lambda: dp.call("detpost_box_overlaps", ctypes.byref(p), ptr(a), n, ptr(b), n, 1, ptr(out))
        dp_ms = gpu_median_ms(run, reps)
        tv_ms = gpu_median_ms(lambda: torchvision.ops.box_iou(a, b), reps)
        run()
        err = (out - torchvision.ops.box_iou(a, b)).abs().max().item()
        gbs = n * n * 4 / (dp_ms * 1e-3) / 1e9
        rows.append(row("box_iou", f"{n}x{n}", dp_ms, tv_ms, f"max|diff| {err:.1e}", note=f"{gbs:.0f} GB/s written"))
    return rows


@case
def generalized_iou(dp, reps):
    n = 4000
    a, b = detector_boxes(n, seed=3), detector_boxes(n, seed=4)
    out = torch.empty(n, n, device="cuda")
    rows = []
    for mode, name, tv in ((2, "generalized_box_iou", torchvision.ops.generalized_box_iou),
                           (3, "distance_box_iou", torchvision.ops.distance_box_iou),
                           (4, "complete_box_iou", torchvision.ops.complete_box_iou)):
        p = OverlapParams(mode, 0, 0.0)
        run = lambda: dp.call("detpost_box_overlaps", ctypes.byref(p), ptr(a), n, ptr(b), n, 1, ptr(out))
        dp_ms = gpu_median_ms(run, reps)
        tv_ms = gpu_median_ms(lambda: tv(a, b), reps)
        run()
        err = (out - tv(a, b)).abs().max().item()
        rows.append(row(name, f"{n}x{n}", dp_ms, tv_ms, f"max|diff| {err:.1e}"))
    return rows


@case
def mask_iou(dp, reps):
    """torchvision has no mask IoU: the baseline is the same steps in torch."""
    na, nb, side = 100, 100, 256
    g = torch.Generator(device="cpu").manual_seed(5)
    a = (torch.rand(na, side * side, generator=g) < 0.3).to(torch.uint8).cuda()
    b = (torch.rand(nb, side * side, generator=g) < 0.3).to(torch.uint8).cuda()
    out = torch.empty(na, nb, device="cuda")

    def torch_mask_iou():
        ah, bh = a.half(), b.half()
        inter = (ah @ bh.t()).float()
        area_a, area_b = a.sum(1, dtype=torch.float32), b.sum(1, dtype=torch.float32)
        union = area_a[:, None] + area_b[None, :] - inter
        return torch.where(union > 0, inter / union, torch.zeros_like(inter))

    run = lambda: dp.call("detpost_mask_iou", ptr(a), na, ptr(b), nb, side * side, ptr(out))
    dp_ms = gpu_median_ms(run, reps)
    tv_ms = gpu_median_ms(torch_mask_iou, reps)
    run()
    a64, b64 = a.double(), b.double()
    inter = a64 @ b64.t()
    exact = inter / (a64.sum(1)[:, None] + b64.sum(1)[None, :] - inter)
    err = (out.double() - exact).abs().max().item()
    return [row("mask_iou (torch baseline)", f"{na}x{nb}@{side}x{side}", dp_ms, tv_ms, f"max|diff| {err:.1e}")]


def unique_scores(n, seed):
    """Distinct scores, so that both libraries face no ties."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return ((torch.randperm(n, generator=g).float() + 1) / (n + 1)).cuda()


@case
def nms(dp, reps):
    rows = []
    for n, target in ((1000, 2), (10000, 3), (100000, 5)):
        boxes, scores = detector_boxes(n, seed=10 + n), unique_scores(n, 20 + n)
        keep = torch.empty(n, dtype=torch.int64, device="cuda")
        num = torch.empty(1, dtype=torch.int64, device="cuda")
        p = dp.lib.detpost_nms_params_default()
        run = lambda: dp.call("detpost_nms", ctypes.byref(p), ptr(boxes), ptr(scores), n, ptr(keep), None, ptr(num))
        dp_ms = gpu_median_ms(run, reps)
        tv_ms = gpu_median_ms(lambda: torchvision.ops.nms(boxes, scores, 0.5), reps)
        run()
        ref = torchvision.ops.nms(boxes, scores, 0.5)
        same = int(num.item()) == ref.numel() and torch.equal(keep[: ref.numel()], ref)
        rows.append(row("nms (hard, iou 0.5)", f"{n} boxes", dp_ms, tv_ms,
                        f"{'identical' if same else 'DIFFERENT'} keep ({ref.numel()} kept)", target))
    return rows


@case
def soft_nms_cost(dp, reps):
    """Gaussian soft-NMS against detpost's own hard NMS of the same boxes (target: within 3x)."""
    n = 10000
    boxes, scores = detector_boxes(n, seed=31), unique_scores(n, 32)
    keep = torch.empty(n, dtype=torch.int64, device="cuda")
    kscores = torch.empty(n, device="cuda")
    num = torch.empty(1, dtype=torch.int64, device="cuda")
    hard, soft = dp.lib.detpost_nms_params_default(), dp.lib.detpost_nms_params_default()
    soft.method = 2
    times = []
    for p in (soft, hard):
        run = lambda: dp.call("detpost_nms", ctypes.byref(p), ptr(boxes), ptr(scores), n, ptr(keep), ptr(kscores),
                              ptr(num))
        times.append(gpu_median_ms(run, reps))
    return [row("soft-NMS gaussian vs detpost hard NMS", f"{n} boxes", times[0], times[1], "-", 1 / 3,
                note="'torchvision ms' column: detpost hard NMS")]


def torch_batched_nms(boxes, scores, threshold, top_k=4096, iou=0.5, max_det=100):
    """Score filter, top-k and torchvision.ops.batched_nms, image by image."""
    out = []
    for b in range(boxes.shape[0]):
        s = scores[b]
        idx = torch.nonzero(s > threshold)
        cand = s[idx[:, 0], idx[:, 1]]
        if cand.numel() > top_k:
            cand, order = cand.topk(top_k)
            idx = idx[order]
        keep = torchvision.ops.batched_nms(boxes[b][idx[:, 0]], cand, idx[:, 1], iou)[:max_det]
        out.append((cand[keep], idx[keep]))
    return out


@case
def batched_nms(dp, reps):
    B, N, C = 16, 8400, 80
    g = torch.Generator(device="cpu").manual_seed(40)
    boxes = torch.stack([detector_boxes(N, 640, 640, seed=41 + b) for b in range(B)])
    scores = torch.sigmoid(torch.randn(B, N, C, generator=g) * 2 - 4).cuda()
    K = 100
    num = torch.empty(B, dtype=torch.int32, device="cuda")
    dboxes = torch.empty(B, K, 4, device="cuda")
    dscores = torch.empty(B, K, device="cuda")
    dclasses = torch.empty(B, K, dtype=torch.int32, device="cuda")
    dindices = torch.empty(B, K, dtype=torch.int32, device="cuda")
    rows = []
    for threshold in (0.25, 0.001):
        p = dp.lib.detpost_batched_nms_params_default()
        p.nms.score_threshold = threshold
        run = lambda: dp.call("detpost_batched_nms", ctypes.byref(p), ptr(boxes), ptr(scores), B, N, C, ptr(num),
                              ptr(dboxes), ptr(dscores), ptr(dclasses), ptr(dindices))
        dp_ms = gpu_median_ms(run, max(5, reps // 3))
        tv_ms = gpu_median_ms(lambda: torch_batched_nms(boxes, scores, threshold), max(5, reps // 3), warmup=2)
        run()
        ref = torch_batched_nms(boxes, scores, threshold)
        agree = all(int(num[b]) == ref[b][0].numel() and
                    torch.equal(dscores[b, : int(num[b])], ref[b][0]) for b in range(B))
        rows.append(row("batched_nms (YOLO head)", f"{B}x{N}x{C} score>{threshold}", dp_ms, tv_ms,
                        "same counts and scores" if agree else "DIFFERENT", 10))
    return rows


def image_rois(num_per_image, images, h, w, seed):
    """[R, 5] rois (batch index, x1, y1, x2, y2) in image pixels, detector-like, image by image."""
    per = [detector_boxes(num_per_image, w, h, seed=seed + i) for i in range(images)]
    idx = torch.arange(images, device="cuda").repeat_interleave(num_per_image).float()[:, None]
    return torch.cat([idx, torch.cat(per)], dim=1).contiguous(), per


@case
def roi_align(dp, reps):
    n, c, h, w = 2, 256, 200, 304
    g = torch.Generator(device="cpu").manual_seed(50)
    feats = torch.randn(n, c, h, w, generator=g).cuda()
    rois, _ = image_rois(500, n, 800, 1216, seed=51)
    r = rois.shape[0]
    out = torch.empty(r, c, 7, 7, device="cuda")
    p = dp.lib.detpost_roi_params_default()
    p.spatial_scale, p.sampling_ratio, p.aligned = 0.25, 2, 0
    run = lambda: dp.call("detpost_roi_align", ctypes.byref(p), ptr(feats), n, c, h, w, ptr(rois), r, ptr(out))
    tv = lambda: torchvision.ops.roi_align(feats, rois, (7, 7), 0.25, 2, False)
    dp_ms, tv_ms = gpu_median_ms(run, reps), gpu_median_ms(tv, reps)
    run()
    err = (out - tv()).abs().max().item()
    rows = [row("roi_align NCHW f32", f"{n}x{c}x{h}x{w}, {r} rois, 7x7, sr 2", dp_ms, tv_ms,
                f"max|diff| {err:.1e}", 1.5)]

    # NHWC: the same data channels-last; torchvision still gets NCHW
    feats_nhwc = feats.permute(0, 2, 3, 1).contiguous()
    out_nhwc = torch.empty(r, 7, 7, c, device="cuda")
    p.layout = 1
    run = lambda: dp.call("detpost_roi_align", ctypes.byref(p), ptr(feats_nhwc), n, c, h, w, ptr(rois), r,
                          ptr(out_nhwc))
    dp_ms = gpu_median_ms(run, reps)
    run()
    err = (out_nhwc.permute(0, 3, 1, 2) - tv()).abs().max().item()
    # gather reference: rows of c floats at random places, as many as the kernel reads (4 corners per sample);
    # index_select writes every row it reads, so its traffic is twice its reads. The kernel's corner reads
    # count cache hits too (neighbouring samples share corners): the ratio is an upper bound, not DRAM traffic.
    reads = r * 49 * 4 * 4
    table = feats_nhwc.view(-1, c)
    picks = torch.randint(0, table.shape[0], (reads,), device="cuda")
    gather_ms = gpu_median_ms(lambda: table.index_select(0, picks), reps)
    gather_gbs = 2 * reads * c * 4 / (gather_ms * 1e-3) / 1e9
    roi_gbs = reads * c * 4 / (dp_ms * 1e-3) / 1e9
    rows.append(row("roi_align NHWC f32", f"{n}x{h}x{w}x{c}, {r} rois, 7x7, sr 2", dp_ms, tv_ms,
                    f"max|diff| {err:.1e}",
                    note=f"{roi_gbs:.0f} GB/s of corner reads (cache hits included) = {roi_gbs / gather_gbs:.2f} "
                         f"of index_select's {gather_gbs:.0f} GB/s gather, read + write (target >= 0.5)"))

    pool_out = torch.empty(r, c, 7, 7, device="cuda")
    argmax = torch.empty(r, c, 7, 7, dtype=torch.int32, device="cuda")
    p.layout = 0
    run = lambda: dp.call("detpost_roi_pool", ctypes.byref(p), ptr(feats), n, c, h, w, ptr(rois), r, ptr(pool_out),
                          ptr(argmax))
    tvp = lambda: torchvision.ops.roi_pool(feats, rois, (7, 7), 0.25)
    dp_ms, tv_ms = gpu_median_ms(run, reps), gpu_median_ms(tvp, reps)
    run()
    err = (pool_out - tvp()).abs().max().item()
    rows.append(row("roi_pool NCHW f32", f"{n}x{c}x{h}x{w}, {r} rois, 7x7", dp_ms, tv_ms, f"max|diff| {err:.1e}"))
    return rows


@case
def multiscale_roi_align(dp, reps):
    n, c, ih, iw = 2, 256, 800, 1216
    g = torch.Generator(device="cpu").manual_seed(60)
    names = ["p2", "p3", "p4", "p5"]
    feats = {k: torch.randn(n, c, ih // s, iw // s, generator=g).cuda() for k, s in zip(names, (4, 8, 16, 32))}
    rois, per_image = image_rois(1000, n, ih, iw, seed=61)
    r = rois.shape[0]
    pooler = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    shapes = [(ih, iw)] * n
    tv = lambda: pooler(feats, per_image, shapes)
    pyr = dp.lib.detpost_feature_pyramid_default()
    pyr.num_levels, pyr.n, pyr.c = 4, n, c
    for i, (k, s) in enumerate(zip(names, (4, 8, 16, 32))):
        f = feats[k]
        pyr.levels[i] = PyramidLevel(C_PTR(f.data_ptr()), f.shape[2], f.shape[3], 1.0 / s)
    p = dp.lib.detpost_roi_params_default()
    p.sampling_ratio, p.aligned = 2, 0
    out = torch.empty(r, c, 7, 7, device="cuda")
    levels = torch.empty(r, dtype=torch.int32, device="cuda")
    run = lambda: dp.call("detpost_multilevel_roi_align", ctypes.byref(p), ctypes.byref(pyr), ptr(rois), r, ptr(out),
                          ptr(levels))
    dp_ms, tv_ms = gpu_median_ms(run, reps), gpu_median_ms(tv, reps)
    run()
    err = (out - tv()).abs().max().item()
    return [row("MultiScaleRoIAlign (4 levels)", f"B={n}, {c} ch, {ih}x{iw}, {r} rois", dp_ms, tv_ms,
                f"max|diff| {err:.1e}", 3)]


def torch_resample(proposals, gt, gt_labels, sp):
    """One Cascade R-CNN stage's assign, sample and targets with box_iou and torch ops, image by image."""
    quota = int(sp.num_samples * sp.pos_fraction)
    means = torch.tensor(list(sp.coder.means), device="cuda")
    stds = torch.tensor(list(sp.coder.stds), device="cuda")
    out = []
    for b in range(proposals.shape[0]):
        boxes = torch.cat([gt[b], proposals[b]])
        iou = torchvision.ops.box_iou(gt[b], boxes)
        best, arg = iou.max(0)
        pos = torch.nonzero(best >= sp.pos_iou)[:, 0]
        neg = torch.nonzero((best >= sp.neg_iou_lo) & (best < sp.neg_iou))[:, 0]
        pos = pos[torch.randperm(pos.numel(), device="cuda")[:quota]]
        neg = neg[torch.randperm(neg.numel(), device="cuda")[: sp.num_samples - pos.numel()]]
        p, g = boxes[pos], gt[b][arg[pos]]
        pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
        gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
        deltas = torch.stack([((g[:, 0] + g[:, 2]) - (p[:, 0] + p[:, 2])) / 2 / pw,
                              ((g[:, 1] + g[:, 3]) - (p[:, 1] + p[:, 3])) / 2 / ph,
                              torch.log(gw / pw), torch.log(gh / ph)], 1)
        targets = (deltas - means) / stds
        labels = torch.cat([gt_labels[b][arg[pos]], torch.full_like(neg, sp.background_label)])
        out.append((pos.numel(), pos.numel() + neg.numel(), targets, labels))
    return out


@case
def cascade_resample(dp, reps):
    B, P, G = 16, 2000, 100
    gen = torch.Generator(device="cpu").manual_seed(70)
    gt = torch.stack([detector_boxes(G, seed=71 + b) for b in range(B)])
    # proposals: ground-truth boxes jittered by up to 30% of their size, as a first stage sees them
    pick = torch.randint(0, G, (B, P), generator=gen).cuda()
    base = torch.gather(gt, 1, pick[..., None].expand(B, P, 4))
    size = (base[..., 2:] - base[..., :2]).repeat(1, 1, 2)
    proposals = (base + 0.3 * (torch.rand(B, P, 4, generator=gen).cuda() - 0.5) * size).contiguous()
    labels = torch.randint(0, 80, (B, G), generator=gen, dtype=torch.int32).cuda()
    num_p = torch.full((B,), P, dtype=torch.int32, device="cuda")
    num_g = torch.full((B,), G, dtype=torch.int32, device="cuda")
    sp = dp.lib.detpost_stage_params_default(0)
    S = sp.num_samples
    rois = torch.empty(B, S, 5, device="cuda")
    olabels = torch.empty(B, S, dtype=torch.int32, device="cuda")
    targets = torch.empty(B, S, 4, device="cuda")
    max_iou = torch.empty(B, S, device="cuda")
    is_gt = torch.empty(B, S, dtype=torch.uint8, device="cuda")
    ns = torch.empty(B, dtype=torch.int32, device="cuda")
    npos = torch.empty(B, dtype=torch.int32, device="cuda")
    run = lambda: dp.call("detpost_cascade_resample", ctypes.byref(sp), B, ptr(proposals), ptr(num_p), P, ptr(gt),
                          ptr(labels), ptr(num_g), G, ptr(rois), ptr(olabels), ptr(targets), ptr(max_iou), ptr(is_gt),
                          ptr(ns), ptr(npos))
    dp_ms = gpu_median_ms(run, reps)
    tv_ms = gpu_median_ms(lambda: torch_resample(proposals, gt, labels, sp), max(5, reps // 3), warmup=2)
    run()
    ref = torch_resample(proposals, gt, labels, sp)
    same = all(int(npos[b]) == ref[b][0] and int(ns[b]) == ref[b][1] for b in range(B))
    return [row("cascade resample (torch + box_iou steps)", f"B={B}, P={P}, G={G}, S={S}", dp_ms, tv_ms,
                "same positive / sample counts" if same else "DIFFERENT counts", 5)]


def copy_bandwidth_gbs():
    x = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    y = torch.empty_like(x)
    ms = gpu_median_ms(lambda: y.copy_(x), 10)
    return 2 * x.numel() * 4 / (ms * 1e-3) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build/gpu/lib/libdetpost.so")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out")
    ap.add_argument("--filter", default="")
    args = ap.parse_args()

    dp = Detpost(args.lib)
    print(f"detpost {dp.lib.detpost_version_string().decode()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, {torch.cuda.get_device_name()}")
    copy = copy_bandwidth_gbs()
    print(f"device-to-device copy: {copy:.0f} GB/s (read + write)")
    rows, failures = [], 0
    for fn in CASES:
        if args.filter not in fn.__name__:
            continue
        try:
            new_rows = fn(dp, args.reps)
            rows.extend(new_rows)
            for r in new_rows:  # as measured, so a run stopped later keeps them in its log
                print(f"{r['op']} {r['shape']}: detpost {r['detpost_ms']:.4f} ms, torchvision "
                      f"{r['torchvision_ms']:.4f} ms, {r['speedup']:.2f}x {r['meets_target']}", flush=True)
        except Exception:
            failures += 1
            print(f"case {fn.__name__} failed:", file=sys.stderr)
            traceback.print_exc()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "copy_gbs": copy, "rows": rows}, f, indent=1)
    print()
    print("| op | shape | detpost ms | torchvision ms | speedup | target | met | agreement | note |")
    print("|---|---|---:|---:|---:|---:|---|---|---|")
    for r in rows:
        target = "" if r["target"] is None else f"{r['target']:g}x"
        print(f"| {r['op']} | {r['shape']} | {r['detpost_ms']:.4f} | {r['torchvision_ms']:.4f} | "
              f"{r['speedup']:.2f}x | {target} | {r['meets_target']} | {r['agree']} | {r['note']} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU check of the select room: select (CUDA, AMP) -> export -> TorchScript / ONNX / predict parity."""
import json, shutil, sys, time
from pathlib import Path

import numpy as np
import torch

from dvt_search.data.dataset import build_datasets, spec_for
from dvt_search.data.phantom import generate
from dvt_search.data.phantom_dicom import export_scan_dicom
from dvt_search.data.schema import read_manifest
from dvt_search.data.splits import make_splits, manifest_fingerprint
from dvt_search.families import FitData, get
from dvt_search.search.records import RunDir, RunInfo, TrialRecord
from dvt_search.select.export import export_run
from dvt_search.select.predict import predict_series
from dvt_search.select.report import write_report
from dvt_search.select.selector import select_run
from dvt_search.select.stats import auc

dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
root = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/selgpu")
shutil.rmtree(root, ignore_errors=True)
res = {"device": dev, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
m = generate(root / "data", patients=10, seed=2, size=128, slices_per_scan=10, preset="easy", iliac_fraction=0.0)
df = read_manifest(m)
sp = make_splits(df, seed=0)
run = RunDir(root / "run")
sp.save(run.path / "splits.json")
run.write_info(RunInfo(run_name="gpu", families=["vgg16", "multitask_unet"], trials_per_family=1, max_epochs=2,
                       manifest=str(m), manifest_fingerprint=manifest_fingerprint(df), splits_hash=sp.hash,
                       image_size=128))
ds = build_datasets(m, run.path / "splits.json", size=128)
spec = spec_for(ds["train"])
for fam, params in (("vgg16", {"head": "gap", "batch_norm": True, "batch_size": 16}), ("multitask_unet", {"batch_size": 16})):
    t = time.time()
    model = get(fam).build(params, spec)
    model.fit(FitData(ds["train"], ds["val"]), 2, device=dev)
    for r in model.history:
        run.append_epoch(fam, "t0", {"epoch": r.epoch, **r.metrics})
    model.save(run.checkpoint_dir(fam, "t0"))
    best = max(model.history, key=lambda r: r.metrics["val_auc"])
    last = model.history[-1].metrics
    # the checkpoint holds the last epoch: record it as the best for a faithful val_auc check
    run.write_trial(TrialRecord("t0", fam, params, status="completed", epochs=2, max_epochs=2, best_epoch=2, best=last,
                                last=last, wall_s=time.time() - t, gpu_s=time.time() - t, has_checkpoint=True))
    res[f"fit_{fam}_s"] = round(time.time() - t, 1)
t = time.time()
sel = select_run(run.path, device=dev)
res["select_s"] = round(time.time() - t, 1)
res["validation_check"] = sel["test"]["validation_check"]
t = time.time()
export_run(run.path, root / "models")
res["export_s"] = round(time.time() - t, 1)
import pandas as pd
preds = pd.read_parquet(run.path / "test_predictions.parquet")
test = build_datasets(m, run.path / "splits.json", size=128)["test"]
x = torch.stack([test[i]["image"] for i in range(len(test))])
for fam in ("vgg16", "multitask_unet"):
    d = root / "models" / fam
    info = json.loads((d / "export.json").read_text())
    sel_scores = preds[preds.family == fam].sort_values("row")["score"].to_numpy()
    ts = torch.jit.load(str(d / "model.ts"))
    with torch.inference_mode():
        cpu = ts(x).double().numpy()
        gpu = torch.jit.load(str(d / "model.ts"), map_location=dev)(x.to(dev)).double().cpu().numpy()
    r = {"onnx": info["onnx"], "ts_cpu_vs_selection_maxdiff": float(np.abs(cpu - sel_scores).max()),
         "ts_gpu_vs_cpu_maxdiff": float(np.abs(gpu - cpu).max()),
         "auc_selection": auc(test.labels, sel_scores), "auc_ts_cpu": auc(test.labels, cpu)}
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
        onx = sess.run(None, {"image": x.numpy()})[0]
        r["onnxruntime_vs_ts_cpu_maxdiff"] = float(np.abs(onx - cpu).max())
    except Exception as exc:
        r["onnxruntime"] = f"{type(exc).__name__}: {exc}"[:200]
    scan = sorted(preds.scan_id.unique())[0]
    export_scan_dicom(m, scan, root / f"dicom_{fam}")
    summ = predict_series(d, root / f"dicom_{fam}", root / f"pred_{fam}", device=dev)
    got = pd.read_csv(root / f"pred_{fam}" / "slices.csv")["probability"].to_numpy()
    rows = preds[(preds.family == fam) & (preds.scan_id == scan)].sort_values("slice_index")
    r["predict_vs_ts_cpu_maxdiff"] = float(np.abs(got[rows.slice_index.to_numpy()] - cpu[rows.row.to_numpy()]).max())
    r["heatmaps"] = len(summ["heatmaps"])
    res[fam] = r
html, _ = write_report(run.path, root / "report")
res["report_kb"] = html.stat().st_size // 1024
print(json.dumps(res, indent=1, default=str))

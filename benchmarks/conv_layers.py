import npstn  # noqa: F401  (first: OpenBLAS's thread timeout)
import time

import numba
import numpy as np
import torch

import npstn.functional as F
from npstn.functional import conv as C
torch.set_num_threads(numba.get_num_threads())
r=np.random.default_rng(0)
def t(f, reps=6):
    f(); ts=[]
    for _ in range(reps):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return round(np.median(ts)*1e3,1)
print(f"# sgemm 2048^3: {__import__('npstn.bench.layers', fromlist=['x']).sgemm_rate():.0f} GFLOP/s")
for (c,s,k,nig) in ((1,42,9,False),(64,17,7,True),(1,28,9,False),(64,10,7,True)):
    x=r.random((256,c,s,s),dtype=np.float32); w=r.random((64,c,k,k),dtype=np.float32)*0.1; b=r.random(64,dtype=np.float32)
    ho=s-k+1; g=r.random((256,64,ho,ho),dtype=np.float32)
    tx=torch.from_numpy(x).requires_grad_(nig); tw=torch.from_numpy(w).requires_grad_(); tb=torch.from_numpy(b).requires_grad_(); tg=torch.from_numpy(g)
    def tf():
        with torch.no_grad(): torch.nn.functional.conv2d(tx,tw,tb)
    def tfb():
        y=torch.nn.functional.conv2d(tx,tw,tb); y.backward(tg)
    ws=C.ConvWorkspace(keep_columns=True)
    def nf(): F.conv2d(x,w,b,backend="cpu",workspace=ws)
    def nfb():
        F.conv2d(x,w,b,backend="cpu",workspace=ws); F.conv2d_backward(g,x,w,b,backend="cpu",workspace=ws,needs_input_grad=nig)
    fl=2*256*64*c*k*k*ho*ho/1e9
    a,bb,cc,d=t(tf),t(nf),t(tfb),t(nfb)
    print(f"conv {c}->64 {k}x{k} on {s}: fwd torch {a} npstn {bb} | fwd+bwd torch {cc} ({fl*(3 if nig else 2)/cc*1e3:.0f} GFLOP/s) npstn {d} ({fl*(3 if nig else 2)/d*1e3:.0f} GFLOP/s)", flush=True)

"""What compiling SampleRNN's per-sample step in PyTorch would give (issue 23's first measurement).

    python bench/generation_step_compile.py

The sample level of one generation step at the demo size (the sum of 20 rows of the
embedding-convolution table, the MLP head of two hidden layers of 256, the Gumbel-max draw
and the log-softmax), for one stream on one thread: eager PyTorch, `torch.jit.trace` and
`torch.compile`. Prints one JSON line: microseconds per call and torch.compile's compile
seconds. 2x real time allows about 31 us per sample for the whole step (all tiers).
"""
import json
import time

import torch
import torch.nn.functional as F

H, Q, TAPS = 256, 256, 20


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    weights = [torch.randn(H, H) * 0.05 for _ in range(2)] + [torch.randn(Q, H) * 0.05]
    biases = [torch.zeros(H), torch.zeros(H), torch.zeros(Q)]
    table = torch.randn(TAPS * Q, H) * 0.05
    offsets = torch.arange(TAPS) * Q

    def step(codes, up, noise):
        x = F.relu(F.embedding_bag(codes + offsets, table, mode="sum") + up)
        x = F.relu(F.linear(x, weights[0], biases[0]))
        x = F.relu(F.linear(x, weights[1], biases[1]))
        logits = F.linear(x, weights[2], biases[2])
        return torch.argmax(logits / 0.7 + noise, -1), torch.log_softmax(logits, -1)

    inputs = (torch.randint(0, Q, (1, TAPS)), torch.randn(1, H), torch.randn(1, Q))

    def per_call(function, calls=2000):
        function(*inputs)
        start = time.perf_counter()
        for _ in range(calls):
            function(*inputs)
        return round((time.perf_counter() - start) / calls * 1e6, 1)

    result = {"eager_us": per_call(step), "jit_trace_us": per_call(torch.jit.trace(step, inputs))}
    start = time.perf_counter()
    compiled = torch.compile(step)
    compiled(*inputs)
    result.update(compile_seconds=round(time.perf_counter() - start, 1), compiled_us=per_call(compiled))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

//! Scatter operations over edges, as PyG's `utils.scatter` and `utils.softmax`.

use tch::{Kind, Tensor};

/// Sums rows of `src` (`[E, …]`) into `n` rows by `index` (`[E]`).
pub fn sum(src: &Tensor, index: &Tensor, n: i64) -> Tensor {
    let mut shape = src.size();
    shape[0] = n;
    Tensor::zeros(shape.as_slice(), (src.kind(), src.device())).index_add(0, index, src)
}

/// The mean of the rows of `src` that `index` sends to each of `n` rows (0 where none does).
pub fn mean(src: &Tensor, index: &Tensor, n: i64) -> Tensor {
    let total = sum(src, index, n);
    let ones = Tensor::ones([src.size()[0]], (src.kind(), src.device()));
    let count = sum(&ones, index, n).clamp_min(1.0);
    let mut shape = vec![n];
    shape.extend(std::iter::repeat_n(1, src.dim() - 1));
    total / count.view(shape.as_slice())
}

/// Softmax of `src` (`[E, H]`) over the edges that share a destination `index`, as PyG's
/// `softmax(src, index, num_nodes=n)`: shifted by each group's maximum, with 1e-16 added to the
/// denominator.
pub fn softmax(src: &Tensor, index: &Tensor, n: i64) -> Tensor {
    let h = src.size()[1];
    let idx = index.view([-1, 1]).expand([-1, h], false);
    let init = Tensor::full([n, h], f64::NEG_INFINITY, (src.kind(), src.device()));
    let max = init.internal_scatter_reduce(0, &idx, &src.detach(), "amax", true);
    let out = (src - max.index_select(0, index)).exp();
    let denom = sum(&out, index, n) + 1e-16;
    out / denom.index_select(0, index)
}

/// `[0, 1, …, n-1]` as an index.
pub fn arange(n: i64, device: tch::Device) -> Tensor {
    Tensor::arange(n, (Kind::Int64, device))
}

#include "models/decoder.h"

#include <cstring>

#include "core/env_switch.h"
#include "layers/attention.h"
#include "layers/mlp.h"
#include "layers/rmsnorm.h"
#include "layers/rotary.h"
#include "models/weight_loader.h"
#include "ops/activation.h"
#include "ops/embedding.h"

namespace blockinfer {
namespace {

struct DecoderLayer {
  RMSNorm input_norm;
  PagedSelfAttention attn;
  RMSNorm post_attention_norm;
  GatedMLP mlp;
};

class DecoderModel final : public Model {
 public:
  DecoderModel(const DecoderWeightNames& names, const std::string& dir, const ModelConfig& c,
               const LoadOptions& options)
      : config_(c), device_(options.device), dtype_(options.dtype) {
    BI_CHECK_ARG(device_.is_cuda() || dtype_ == DType::kFloat32,
                 "the CPU backend computes in float32; got dtype ", dtype_name(dtype_));
    WeightLoader w(dir, options);
    const int64_t h = c.hidden_size, d = c.head_dim, nh = c.num_heads, kvh = c.num_kv_heads,
                  inter = c.intermediate_size;
    embed_ = w.get(names.embed, {c.vocab_size, h});
    Tensor inv_freq = rope_inv_freq(d, c.rope_theta);
    if (device_.is_cuda()) inv_freq = inv_freq.to(device_);
    layers_.resize(static_cast<size_t>(c.num_layers));
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string p = names.layer_prefix + std::to_string(i) + ".";
      DecoderLayer& L = layers_[static_cast<size_t>(i)];
      L.input_norm = {w.get_norm(p + names.input_norm, h), c.rms_norm_eps};
      L.post_attention_norm = {w.get_norm(p + names.post_attention_norm, h), c.rms_norm_eps};
      L.attn.qkv.weight = w.get_fused({p + names.q, p + names.k, p + names.v},
                                      {{nh * d, h}, {kvh * d, h}, {kvh * d, h}});
      if (!names.q_bias.empty())
        L.attn.qkv.bias = w.get_fused({p + names.q_bias, p + names.k_bias, p + names.v_bias},
                                      {{nh * d}, {kvh * d}, {kvh * d}});
      L.attn.o_proj.weight = w.get(p + names.o, {h, nh * d});
      if (!names.q_norm.empty()) {
        L.attn.q_norm = w.get_norm(p + names.q_norm, d);
        L.attn.k_norm = w.get_norm(p + names.k_norm, d);
      }
      L.attn.inv_freq = inv_freq;
      L.attn.dims = {nh, kvh, d};
      L.attn.eps = c.rms_norm_eps;
      L.mlp.gate_up.weight = w.get_fused({p + names.gate, p + names.up}, {{inter, h}, {inter, h}});
      L.mlp.use_fused_silu_mul();
      L.mlp.down.weight = w.get(p + names.down, {h, inter});
    }
    final_norm_ = {w.get_norm(names.final_norm, h), c.rms_norm_eps};
    if (c.tie_word_embeddings && !w.has(names.lm_head)) {
      lm_head_.weight = embed_;
    } else {
      lm_head_.weight = w.get(names.lm_head, {c.vocab_size, h});
    }
    w.check_all_consumed();
  }

  const ModelConfig& config() const override { return config_; }
  Device device() const override { return device_; }
  DType dtype() const override { return dtype_; }

  void forward(const ForwardInput& in, std::vector<LayerKVCache>& cache,
               Tensor& hidden) const override {
    const int64_t n = in.token_ids.size(0), h = config_.hidden_size;
    BI_CHECK_ARG(static_cast<int64_t>(cache.size()) == config_.num_layers, "forward: ", cache.size(),
                 " KV cache layers for a model of ", config_.num_layers);
    Tensor x = Tensor::empty({n, h}, dtype_, device_);       // the residual stream
    ops::embedding(in.token_ids, embed_, x);
    Tensor normed = Tensor::empty({n, h}, dtype_, device_);
    // The last layer's output projection, MLP and the final norm run on the selected rows only:
    // every row still writes its KV there, but no other row's output is read.
    const Tensor& rows = in.logit_rows;
    const int64_t r = rows.size(0);
    // By default o_proj and down add their products into x (ops::linear's accumulate: the residual
    // add in the GEMM's epilogue), so each norm reads x alone: `branch` is x. With
    // BLOCKINFER_RESIDUAL_GEMM=0 they write a separate `branch`, and each norm after the first adds
    // it into x (fused add + norm), as Qwen3's decoder layer does.
    const bool fold = residual_in_gemm();
    auto norm = [&](const RMSNorm& nrm, Tensor& stream, const Tensor& br, Tensor& out, bool add) {
      if (fold || !add) {
        nrm.forward(stream, out);
      } else {
        nrm.forward(br, out, &stream);
      }
    };
    Tensor branch = fold ? x : Tensor::empty({n, h}, dtype_, device_);
    for (size_t i = 0; i + 1 < layers_.size(); ++i) {
      const DecoderLayer& L = layers_[i];
      norm(L.input_norm, x, branch, normed, i > 0);
      L.attn.forward(normed, in.attn, cache[i].k, cache[i].v, branch, nullptr, fold);
      norm(L.post_attention_norm, x, branch, normed, true);
      L.mlp.forward(normed, branch, fold);
    }
    const DecoderLayer& L = layers_.back();
    norm(L.input_norm, x, branch, normed, layers_.size() > 1);
    Tensor x_sel = Tensor::empty({r, h}, dtype_, device_);
    if (r > 0) ops::gather_rows(x, rows, x_sel);
    Tensor branch_sel = fold ? x_sel : Tensor::empty({r, h}, dtype_, device_);
    L.attn.forward(normed, in.attn, cache.back().k, cache.back().v, branch_sel, &rows, fold);
    if (r == 0) return;
    Tensor normed_sel = Tensor::empty({r, h}, dtype_, device_);
    norm(L.post_attention_norm, x_sel, branch_sel, normed_sel, true);
    L.mlp.forward(normed_sel, branch_sel, fold);
    norm(final_norm_, x_sel, branch_sel, hidden, true);
  }

  void lm_head(const Tensor& hidden, Tensor& logits) const override {
    lm_head_.forward(hidden, logits);  // float32 logits
  }
  const Tensor* lm_head_weight() const override { return lm_head_.bias.defined() ? nullptr : &lm_head_.weight; }

  void warm_up_gemms(const std::vector<int64_t>& rows, int64_t max_lm_head_rows) const override {
    if (layers_.empty()) return;
    const DecoderLayer& L = layers_.front();
    const int64_t h = config_.hidden_size, q = L.attn.o_proj.in_features();
    const bool fold = residual_in_gemm();  // the calls forward makes
    for (int64_t m : rows) {
      if (m < 1) continue;
      // Scratch contents do not matter (uninitialised memory may hold NaNs; no result is read).
      Tensor x = Tensor::empty({m, h}, dtype_, device_);
      Tensor qkv = Tensor::empty({m, L.attn.qkv.out_features()}, dtype_, device_);
      L.attn.qkv.forward(x, qkv);
      Tensor attn = Tensor::empty({m, q}, dtype_, device_);
      L.attn.o_proj.forward(attn, x, fold);
      L.mlp.forward(x, x, fold);
      if (m <= max_lm_head_rows) {
        Tensor logits = Tensor::empty({m, config_.vocab_size}, DType::kFloat32, device_);
        lm_head_.forward(x, logits);
      }
    }
  }

 private:
  // Whether o_proj and down carry the residual add (the default; BLOCKINFER_RESIDUAL_GEMM=0 puts it
  // back in the norms). In float32 both give the same bits; in 16-bit types the GEMM's sum is
  // rounded once, where the norm's path rounds the projection to the dtype before adding. (With
  // o_proj and down split by rows over ranks, only one rank's partial may carry the stream into
  // the all-reduce that sums them.)
  static bool residual_in_gemm() {
    static const bool on = env_switch("BLOCKINFER_RESIDUAL_GEMM") != 0;
    return on;
  }

  ModelConfig config_;
  Device device_;
  DType dtype_;
  Tensor embed_;
  std::vector<DecoderLayer> layers_;
  RMSNorm final_norm_;
  Linear lm_head_;
};

}  // namespace

std::unique_ptr<Model> load_decoder(const DecoderWeightNames& names, const std::string& dir,
                                    const ModelConfig& config, const LoadOptions& options) {
  return std::make_unique<DecoderModel>(names, dir, config, options);
}

}  // namespace blockinfer

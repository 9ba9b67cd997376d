// blockinfer._C: the only file that knows pybind11 types besides the DLPack bridge. Long calls
// (model load, step) release the GIL.
#include <pybind11/pybind11.h>
#include <algorithm>
#include <pybind11/stl.h>

#include "blockinfer/engine.h"
#include "blockinfer/sampling_params.h"
#include "blockinfer/status.h"
#include "blockinfer/tensor.h"
#include "ops/linear.h"
#include "ops/rmsnorm.h"
#include "ops/sampling.h"
#include "python/dlpack_bridge.h"

namespace py = pybind11;
using namespace blockinfer;

namespace {

void register_errors(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const NotImplementedYet& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    } catch (const Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
}

void bind_tensor(py::module_& m) {
  py::class_<Tensor>(m, "Tensor", "A libblockinfer tensor; exchange with numpy/torch through DLPack.")
      .def_property_readonly("shape", [](const Tensor& t) { return t.shape(); })
      .def_property_readonly("dtype", [](const Tensor& t) { return std::string(dtype_name(t.dtype())); })
      .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
      .def("__dlpack__",
           [](const Tensor& t, py::kwargs) { return python::to_dlpack(t); })
      .def("__dlpack_device__", [](const Tensor& t) { return python::dlpack_device(t); });
  m.def("from_dlpack", &python::from_dlpack, py::arg("obj"),
        "View any DLPack-capable array (numpy, torch, CPU or CUDA) as a blockinfer Tensor.");
}

void bind_ops(py::module_& m) {
  py::module_ ops = m.def_submodule("ops", "Single ops on DLPack tensors, for kernel tests.");
  ops.def(
      "fused_silu_mul_block",
      [](const std::string& dtype, int device, int64_t inter, int64_t k) {
        return ops::fused_silu_mul_block(parse_float_dtype(dtype), Device::cuda(device), inter, k);
      },
      "The gate/up run length the fused Hopper gate_up + SiLU·mul takes on this CUDA device, or 0 "
      "where it does not serve.",
      py::arg("dtype"), py::arg("device"), py::arg("inter"), py::arg("k"));
  ops.def(
      "lm_head_greedy_serves",
      [](const std::string& dtype, int device, int64_t vocab, int64_t k) {
        return ops::lm_head_greedy_serves(parse_float_dtype(dtype), Device::cuda(device), vocab, k);
      },
      "Whether greedy rows of a model with this dtype, vocabulary and hidden size take the fused LM "
      "head and sampling (ops::lm_head_greedy) on this CUDA device.",
      py::arg("dtype"), py::arg("device"), py::arg("vocab"), py::arg("k"));
  ops.def(
      "rmsnorm",
      [](py::object x_obj, py::object w_obj, float eps, py::object residual_obj) {
        Tensor x = python::from_dlpack(x_obj);
        Tensor w = python::from_dlpack(w_obj);
        Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
        if (residual_obj.is_none()) {
          ops::rmsnorm(x, w, eps, out);
        } else {
          Tensor residual = python::from_dlpack(residual_obj);  // updated in place
          ops::rmsnorm(x, w, eps, out, &residual);
        }
        return out;
      },
      py::arg("x"), py::arg("weight"), py::arg("eps"), py::arg("residual") = py::none());
  ops.def(
      "sample_rows",
      [](py::object logits_obj, std::vector<float> temperature, std::vector<int32_t> topk,
         std::vector<float> topp, std::vector<uint64_t> seed, std::vector<uint32_t> step,
         std::vector<uint32_t> position, std::vector<int> confidence_kind) {
        Tensor logits = python::from_dlpack(logits_obj);
        BI_CHECK_ARG(logits.dim() == 2, "sample_rows: logits must be [rows, vocab]");
        const int64_t rows = logits.size(0);
        if (confidence_kind.empty()) confidence_kind.assign(static_cast<size_t>(rows), 0);
        for (size_t n : {temperature.size(), topk.size(), topp.size(), seed.size(), step.size(),
                         position.size(), confidence_kind.size()})
          BI_CHECK_ARG(static_cast<int64_t>(n) == rows, "sample_rows: every parameter list needs ",
                       rows, " entries");
        std::vector<ops::SampleRowParams> params(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          BI_CHECK_ARG(confidence_kind[r] >= 0 && confidence_kind[r] <= 2,
                       "sample_rows: confidence_kind must be 0 (tempered), 1 (untempered) or 2 (random)");
          params[r] = {temperature[r], topk[r], topp[r], seed[r], step[r], position[r],
                       static_cast<ops::ConfidenceKind>(confidence_kind[r])};
        }
        ops::SampleOutputs out = ops::SampleOutputs::empty(rows);
        ops::sample_rows(logits.contiguous(), params, out);
        return py::make_tuple(out.x0, out.confidence, out.logprob, out.entropy);
      },
      py::arg("logits"), py::arg("temperature"), py::arg("topk"), py::arg("topp"), py::arg("seed"),
      py::arg("step"), py::arg("position"), py::arg("confidence_kind") = std::vector<int>{},
      "Returns (x0, confidence, logprob, entropy) tensors.");
}

void bind_engine(py::module_& m) {
  py::class_<SamplingParams>(m, "SamplingParams")
      .def(py::init<>())
      .def_readwrite("temperature", &SamplingParams::temperature)
      .def_readwrite("topk", &SamplingParams::topk)
      .def_readwrite("topp", &SamplingParams::topp)
      .def_readwrite("max_tokens", &SamplingParams::max_tokens)
      .def_readwrite("remasking_strategy", &SamplingParams::remasking_strategy)
      .def_readwrite("block_length", &SamplingParams::block_length)
      .def_readwrite("denoising_steps", &SamplingParams::denoising_steps)
      .def_readwrite("dynamic_threshold", &SamplingParams::dynamic_threshold)
      .def_readwrite("eb_threshold", &SamplingParams::eb_threshold)
      .def_readwrite("factor", &SamplingParams::factor)
      .def_readwrite("alg_temp", &SamplingParams::alg_temp)
      .def_readwrite("cfg_scale", &SamplingParams::cfg_scale)
      .def_readwrite("stop", &SamplingParams::stop)
      .def_readwrite("stop_token_ids", &SamplingParams::stop_token_ids)
      .def_readwrite("ignore_eos", &SamplingParams::ignore_eos)
      .def_readwrite("seed", &SamplingParams::seed)
      .def_readwrite("logprobs", &SamplingParams::logprobs)
      .def("validate", &SamplingParams::validate);
  m.def("remasking_strategy_names", &remasking_strategy_names);

  py::class_<EngineConfig>(m, "EngineConfig")
      .def(py::init<>())
      .def_readwrite("model_dir", &EngineConfig::model_dir)
      .def_readwrite("load_format", &EngineConfig::load_format)
      .def_readwrite("device", &EngineConfig::device)
      .def_readwrite("dtype", &EngineConfig::dtype)
      .def_readwrite("gpu_memory_utilization", &EngineConfig::gpu_memory_utilization)
      .def_readwrite("enforce_eager", &EngineConfig::enforce_eager)
      .def_readwrite("max_cuda_graphs", &EngineConfig::max_cuda_graphs)
      .def_readwrite("lm_head_chunk_rows", &EngineConfig::lm_head_chunk_rows)
      .def_readwrite("async_scheduling", &EngineConfig::async_scheduling)
      .def_readwrite("prefill_first", &EngineConfig::prefill_first)
      .def_readwrite("mask_token_id", &EngineConfig::mask_token_id)
      .def_readwrite("decode_mode", &EngineConfig::decode_mode)
      .def_readwrite("block_length", &EngineConfig::block_length)
      .def_readwrite("max_model_len", &EngineConfig::max_model_len)
      .def_readwrite("max_num_seqs", &EngineConfig::max_num_seqs)
      .def_readwrite("max_num_batched_tokens", &EngineConfig::max_num_batched_tokens)
      .def_readwrite("kv_page_size", &EngineConfig::kv_page_size)
      .def_readwrite("num_kv_pages", &EngineConfig::num_kv_pages)
      .def_readwrite("kv_cache_memory_bytes", &EngineConfig::kv_cache_memory_bytes)
      .def_readwrite("extra_eos_token_ids", &EngineConfig::extra_eos_token_ids)
      .def_readwrite("seed", &EngineConfig::seed)
      .def_readwrite("dummy_seed", &EngineConfig::dummy_seed);

  py::class_<ModelInfo>(m, "ModelInfo")
      .def_readonly("model_type", &ModelInfo::model_type)
      .def_readonly("device", &ModelInfo::device)
      .def_readonly("dtype", &ModelInfo::dtype)
      .def_readonly("decode_mode", &ModelInfo::decode_mode)
      .def_readonly("vocab_size", &ModelInfo::vocab_size)
      .def_readonly("mask_token_id", &ModelInfo::mask_token_id)
      .def_readonly("block_length", &ModelInfo::block_length)
      .def_readonly("max_model_len", &ModelInfo::max_model_len)
      .def_readonly("eos_token_ids", &ModelInfo::eos_token_ids)
      .def_readonly("num_kv_pages", &ModelInfo::num_kv_pages)
      .def_readonly("kv_page_size", &ModelInfo::kv_page_size);

  py::class_<RequestOutput>(m, "RequestOutput")
      .def_readonly("request_id", &RequestOutput::request_id)
      .def_readonly("new_token_ids", &RequestOutput::new_token_ids)
      .def_property_readonly("new_logprobs",
                             [](const RequestOutput& o) {
                               py::list l;
                               for (const auto& t : o.new_logprobs)
                                 l.append(py::make_tuple(t.step, t.logprob, t.entropy));
                               return l;
                             })
      .def_readonly("finished", &RequestOutput::finished)
      .def_property_readonly("finish_reason",
                             [](const RequestOutput& o) -> py::object {
                               if (o.finish_reason == FinishReason::kNone) return py::none();
                               return py::str(finish_reason_name(o.finish_reason));
                             })
      .def_readonly("num_forwards", &RequestOutput::num_forwards);

  py::class_<Engine>(m, "Engine")
      .def(py::init<const EngineConfig&>(), py::arg("config"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("model_info", &Engine::model_info, py::return_value_policy::reference_internal)
      .def("add_request", &Engine::add_request, py::arg("prompt_token_ids"), py::arg("params"))
      .def("validate_request", &Engine::validate_request, py::arg("prompt_token_ids"), py::arg("params"))
      .def("step", &Engine::step, py::call_guard<py::gil_scoped_release>())
      .def("has_unfinished", &Engine::has_unfinished)
      .def(
          "compute_logits",
          [](Engine& e, const std::vector<int32_t>& ids, int32_t block_length) {
            std::vector<float> v;
            {
              py::gil_scoped_release release;
              v = e.compute_logits(ids, block_length);
            }
            const int64_t vocab = e.model_info().vocab_size;
            Tensor t = Tensor::empty({static_cast<int64_t>(ids.size()), vocab}, DType::kFloat32);
            std::copy(v.begin(), v.end(), t.data<float>());
            return t;
          },
          py::arg("token_ids"), py::arg("block_length"),
          "Float32 logits [len, vocab] of one sequence forwarded whole (block-causal); a DLPack tensor.")
      .def("abort", &Engine::abort, py::arg("request_id"))
      .def("num_free_kv_pages", &Engine::num_free_kv_pages)
      .def("num_running", &Engine::num_running)
      .def("num_waiting", &Engine::num_waiting)
      .def("num_preemptions", &Engine::num_preemptions)
      .def("num_cuda_graphs", &Engine::num_cuda_graphs)
      .def("num_cuda_graph_evictions", &Engine::num_cuda_graph_evictions)
      .def("num_cuda_graph_replays", &Engine::num_cuda_graph_replays)
      .def("num_forwards_launched_ahead", &Engine::num_forwards_launched_ahead)
      .def("num_logit_rows_discarded", &Engine::num_logit_rows_discarded)
      .def("num_forwards", &Engine::num_forwards);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "libblockinfer bindings";
  register_errors(m);
  bind_tensor(m);
  bind_ops(m);
  bind_engine(m);
  m.def("cuda_device_count", &cuda_device_count, "Visible GPUs (0 without a driver or CUDA build).");
  m.def("built_with_cuda", &built_with_cuda);
}

// End-to-end engine benchmark through the C++ API (no Python): dummy weights of a real shape,
// batches of identical-length prompts, low_confidence_static with steps = block length (or
// --steps). Prints one Markdown table: ms per forward, generated tokens/s, and the hardware limit
// of a forward (max of bytes read / copy bandwidth and FLOPs / GEMM rate) with the
// measured-to-limit ratio, how many forwards replayed a CUDA graph, and the mean time from the
// batch's start to each request's first committed tokens (its first block: time to first tokens).
//
//   bench_engine MODEL_DIR [--batch 1,8,32] [--block 4,16] [--prompt 256,1024] [--gen 512]
//                [--steps N] [--mode canvas|prefix_cache|dual_cache|block_causal] [--eager 1]
//                [--strategy NAME] [--topp P] [--topk K] [--temperature T] (T = 0, greedy, unless set)
//                [--dtype bfloat16] [--device cuda] [--copy-gbps 3000] [--tflops 800]
//                [--max-batched-tokens N] (the engine's per-forward budget; default: the engine's)
//                [--repeat N] (each batch N times in a row, a row each: the later runs find the CUDA
//                graphs, GEMM plans and cached blocks of the first)
//                [--step-times N] (each run's N slowest steps and its first 16, to stderr)
//                [--async 0|1] (EngineConfig::async_scheduling, on by default)
//                [--prefill-first 0|1] (EngineConfig::prefill_first)
//                [--max-graphs N] (EngineConfig::max_cuda_graphs; default: the engine's)
//                [--serve N --rate R] (a serving workload instead of the batches: N requests arriving
//                at R a second (Poisson; 0: all at once), prompt and generated lengths drawn uniformly
//                from half to 1.5 x the first --prompt and --gen, at most max(--batch) running; one
//                row per block length with tokens/s, the share of forwards that replayed a CUDA
//                graph, the graphs captured and evicted, and the mean time to first tokens from
//                each request's arrival) [--seed S] (the workload's draws; default 0)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "blockinfer/engine.h"
#include "models/model_config.h"

using namespace blockinfer;

namespace {

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

// A 0/1 switch; anything else is an error (std::invalid_argument, reported like a bad number).
bool parse_switch(const std::string& v) {
  if (v != "0" && v != "1") throw std::invalid_argument(v);
  return v == "1";
}

// The run's slowest `n` steps (index, ms, and whether the step replayed a CUDA graph: g, or ran
// eagerly: e) and its first 16, to stderr: where a first run pays for shapes it meets first.
void print_step_times(const std::vector<std::tuple<double, int64_t, bool>>& step_ms, int n) {
  if (step_ms.empty()) return;
  std::vector<std::tuple<double, int64_t, bool>> sorted = step_ms;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return std::get<0>(a) > std::get<0>(b); });
  auto one = [](const std::tuple<double, int64_t, bool>& t) {
    std::fprintf(stderr, " #%lld %.1f%s", static_cast<long long>(std::get<1>(t)), std::get<0>(t), std::get<2>(t) ? "g" : "e");
  };
  std::fprintf(stderr, "  median step %.2f ms; slowest:", std::get<0>(sorted[sorted.size() / 2]));
  for (size_t i = 0; i < sorted.size() && i < static_cast<size_t>(n); ++i) one(sorted[i]);
  std::fprintf(stderr, "\n  first steps:");
  for (size_t i = 0; i < step_ms.size() && i < 16; ++i) one(step_ms[i]);
  std::fprintf(stderr, "\n");
}

// The mean of `seconds` (request id -> seconds to its first tokens), in ms; 0 for none.
double mean_ms(const std::unordered_map<int64_t, double>& seconds) {
  double sum = 0.0;
  for (const auto& [id, s] : seconds) sum += s;
  return seconds.empty() ? 0.0 : 1e3 * sum / double(seconds.size());
}

// Warm-up before a measured run: one request of `prompt` tokens and one block (cuBLASLt
// heuristics, the allocator's cache, the shapes a block's steps meet).
void run_warm_up(Engine& engine, SamplingParams sp, int prompt) {
  sp.max_tokens = sp.block_length.value_or(4);
  engine.add_request(std::vector<int32_t>(static_cast<size_t>(prompt), 1), sp);
  while (engine.has_unfinished()) engine.step();
}

// A serving workload (--serve): requests arrive by a Poisson process, each with its own prompt and
// generated length, and the engine steps whenever it has work.
struct Workload {
  int requests = 0;
  double rate = 0.0;  // requests a second; 0: all at once
  uint32_t seed = 0;
  int prompt = 0, gen = 0;
  int max_seqs = 0;
};

void run_serving(Engine& engine, SamplingParams sp, const Workload& w, int32_t vocab, const std::string& row_head) {
  std::mt19937 rng(w.seed);
  std::uniform_int_distribution<int> prompt_len(std::max(1, w.prompt / 2), std::max(1, w.prompt * 3 / 2));
  std::uniform_int_distribution<int> gen_len(std::max(1, w.gen / 2), std::max(1, w.gen * 3 / 2));
  std::exponential_distribution<double> gap(w.rate > 0.0 ? w.rate : 1.0);
  struct Arrival {
    double at = 0.0;
    std::vector<int32_t> prompt;
    int gen = 0;
  };
  std::vector<Arrival> arrivals(static_cast<size_t>(w.requests));
  double t = 0.0;
  for (int i = 0; i < w.requests; ++i) {
    Arrival& a = arrivals[static_cast<size_t>(i)];
    if (w.rate > 0.0 && i > 0) t += gap(rng);
    a.at = t;
    a.prompt.resize(static_cast<size_t>(prompt_len(rng)));
    for (size_t j = 0; j < a.prompt.size(); ++j) a.prompt[j] = static_cast<int32_t>((7 * i + 13 * j) % (vocab - 2));
    a.gen = gen_len(rng);
  }
  run_warm_up(engine, sp, w.prompt);
  const int64_t forwards0 = engine.num_forwards(), replays0 = engine.num_cuda_graph_replays();
  const int64_t graphs0 = engine.num_cuda_graphs(), evictions0 = engine.num_cuda_graph_evictions();
  const int64_t ahead0 = engine.num_forwards_launched_ahead();
  const auto t0 = std::chrono::steady_clock::now();
  auto since_start = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::unordered_map<int64_t, double> arrived, first_tokens;  // request id -> seconds
  int64_t tokens = 0;
  size_t next = 0;
  while (next < arrivals.size() || engine.has_unfinished()) {
    for (double now = since_start(); next < arrivals.size() && arrivals[next].at <= now; ++next) {
      sp.max_tokens = arrivals[next].gen;
      arrived[engine.add_request(arrivals[next].prompt, sp)] = arrivals[next].at;
    }
    if (!engine.has_unfinished()) {
      std::this_thread::sleep_for(std::chrono::duration<double>(arrivals[next].at - since_start()));
      continue;
    }
    const auto outs = engine.step();
    const double now = since_start();
    for (const auto& o : outs) {
      tokens += static_cast<int64_t>(o.new_token_ids.size());
      if (!o.new_token_ids.empty()) first_tokens.emplace(o.request_id, now - arrived[o.request_id]);
    }
  }
  const double secs = since_start();
  const int64_t forwards = engine.num_forwards() - forwards0;
  const int64_t replays = engine.num_cuda_graph_replays() - replays0;
  const int64_t evicted = engine.num_cuda_graph_evictions() - evictions0;
  std::printf("%s | %d | %.1f | %d | %d | %d | %lld | %.2f | %.0f | %lld (%.0f%%) | %lld | %lld | %.1f | %lld |\n",
              row_head.c_str(), w.requests, w.rate, w.max_seqs, w.prompt, w.gen, static_cast<long long>(forwards),
              forwards > 0 ? 1e3 * secs / double(forwards) : 0.0, double(tokens) / secs, static_cast<long long>(replays),
              forwards > 0 ? 100.0 * double(replays) / double(forwards) : 0.0,
              static_cast<long long>(engine.num_cuda_graphs() - graphs0 + evicted), static_cast<long long>(evicted),
              mean_ms(first_tokens),
              static_cast<long long>(engine.num_forwards_launched_ahead() - ahead0));
  std::fflush(stdout);
}

}  // namespace

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [--batch 1,8] [--block 4,16] [--prompt N] [--gen N] "
                         "[--dtype D] [--device D] [--copy-gbps G] [--tflops T]\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1], dtype = "bfloat16", device = "cuda", mode, strategy = "low_confidence_static";
  std::vector<int> batches = {1, 8, 32}, blocks = {4, 16};
  std::vector<int> prompts = {256};
  int gen = 512, steps_opt = 0;
  bool eager = false, async_scheduling = EngineConfig{}.async_scheduling;
  bool prefill_first = EngineConfig{}.prefill_first;
  float topp = 1.f, temperature = 0.f;
  int topk = 0;
  int64_t max_batched = 0;
  int repeat = 1, step_times = 0, serve = 0, max_graphs = EngineConfig{}.max_cuda_graphs;
  double rate = 0.0;
  uint32_t seed = 0;
  double copy_gbps = 3000, tflops = 800;  // H100: measured D2D copy 3.0 TB/s, bf16 GEMM 800 TFLOP/s
  if (argc % 2 != 0) {
    std::fprintf(stderr, "option %s has no value\n", argv[argc - 1]);
    return 2;
  }
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    try {
      if (k == "--batch") batches = parse_list(v);
      else if (k == "--block") blocks = parse_list(v);
      else if (k == "--prompt") prompts = parse_list(v);
      else if (k == "--gen") gen = std::stoi(v);
      else if (k == "--dtype") dtype = v;
      else if (k == "--device") device = v;
      else if (k == "--copy-gbps") copy_gbps = std::stod(v);
      else if (k == "--tflops") tflops = std::stod(v);
      else if (k == "--steps") steps_opt = std::stoi(v);
      else if (k == "--mode") mode = v;
      else if (k == "--eager") eager = parse_switch(v);
      else if (k == "--async") async_scheduling = parse_switch(v);
      else if (k == "--prefill-first") prefill_first = parse_switch(v);
      else if (k == "--strategy") strategy = v;
      else if (k == "--topp") topp = std::stof(v);
      else if (k == "--topk") topk = std::stoi(v);
      else if (k == "--temperature") temperature = std::stof(v);
      else if (k == "--max-batched-tokens") max_batched = std::stoll(v);
      else if (k == "--repeat") repeat = std::stoi(v);
      else if (k == "--step-times") step_times = std::stoi(v);
      else if (k == "--serve") serve = std::stoi(v);
      else if (k == "--max-graphs") max_graphs = std::stoi(v);
      else if (k == "--rate") rate = std::stod(v);
      else if (k == "--seed") seed = static_cast<uint32_t>(std::stoul(v));
      else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
    } catch (const std::logic_error&) {  // std::stoi and friends: not a number, or out of range
      std::fprintf(stderr, "option %s: '%s' is not a valid number (or list of numbers; 0 or 1 for a switch)\n",
                   k.c_str(), v.c_str());
      return 2;
    }
  }
  for (const auto& [name, values] : {std::pair{"--batch", batches}, {"--block", blocks}, {"--prompt", prompts}})
    for (int v : values)
      if (v < 1) {
        std::fprintf(stderr, "option %s: %d is not a positive count\n", name, v);
        return 2;
      }
  if (gen < 1 || repeat < 1) {
    std::fprintf(stderr, "options --gen and --repeat: %d, %d: each must be a positive count\n", gen, repeat);
    return 2;
  }
  if (serve < 0 || !(rate >= 0.0)) {
    std::fprintf(stderr, "options --serve and --rate: %d, %g: a request count and a rate, neither negative\n", serve, rate);
    return 2;
  }
  const ModelConfig c = load_model_config(dir);
  const double params = double(c.vocab_size) * c.hidden_size * (c.tie_word_embeddings ? 1 : 2) +
                        double(c.num_layers) * (double(c.hidden_size) * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim +
                                                double(c.num_heads) * c.head_dim * c.hidden_size +
                                                3.0 * c.hidden_size * c.intermediate_size);
  const double bytes_per_elem = dtype == "float32" ? 4 : 2;
  std::string name = dir;
  while (!name.empty() && name.back() == '/') name.pop_back();
  name = name.substr(name.find_last_of('/') + 1);
  if (serve > 0) {
    std::printf("| shape | mode | dtype | block | steps | requests | rate/s | max seqs | prompt | gen | forwards | "
                "ms/forward | tokens/s | graph replays | graphs captured | graphs evicted | first tokens ms | "
                "launched ahead |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  } else {
    std::printf("| shape | mode | dtype | batch | prompt | block | steps | forwards | ms/forward | tokens/s | limit ms | "
                "ratio | graph replays | first tokens ms |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  }
  for (int block : blocks) {
    EngineConfig cfg;
    cfg.model_dir = dir;
    cfg.load_format = "dummy";
    cfg.device = device;
    cfg.dtype = dtype;
    cfg.block_length = block;
    cfg.mask_token_id = c.vocab_size - 1;
    const int max_prompt = *std::max_element(prompts.begin(), prompts.end());
    cfg.max_model_len = serve > 0 ? max_prompt * 3 / 2 + gen * 3 / 2 + 2 * block : max_prompt + gen + 2 * block;
    cfg.max_num_seqs = serve > 0 ? *std::max_element(batches.begin(), batches.end()) : 512;
    cfg.decode_mode = mode;
    cfg.enforce_eager = eager;
    cfg.async_scheduling = async_scheduling;
    cfg.prefill_first = prefill_first;
    cfg.max_cuda_graphs = max_graphs;
    if (max_batched > 0) cfg.max_num_batched_tokens = max_batched;
    const auto t_build = std::chrono::steady_clock::now();
    Engine engine(cfg);
    std::fprintf(stderr, "  engine built in %.1f s (dummy weights made and uploaded, KV cache planned)\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t_build).count());
    const std::string mode_name = engine.model_info().decode_mode;
    std::string label = mode_name;
    if (strategy != "low_confidence_static") label += ", " + strategy;
    if (temperature > 0.f) label += ", T " + std::to_string(temperature).substr(0, 4);
    if (topk > 0) label += ", top-k " + std::to_string(topk);
    if (topp < 1.f) label += ", top-p " + std::to_string(topp).substr(0, 4);
    const int steps = steps_opt > 0 ? steps_opt : block;
    SamplingParams base;
    base.temperature = temperature;
    base.max_tokens = gen;
    base.ignore_eos = true;
    base.block_length = block;
    base.denoising_steps = steps;
    base.remasking_strategy = strategy;
    base.topp = topp;
    base.topk = topk;
    if (serve > 0) {
      const Workload w{serve, rate, seed, prompts.front(), gen, static_cast<int>(cfg.max_num_seqs)};
      char head[256];
      std::snprintf(head, sizeof(head), "| %s | %s | %s | %d | %d", name.c_str(), label.c_str(), dtype.c_str(), block, steps);
      run_serving(engine, base, w, static_cast<int32_t>(c.vocab_size), head);
      continue;
    }
    for (int prompt : prompts)
    for (int batch : batches) {
      SamplingParams sp = base;
      run_warm_up(engine, sp, prompt);
      // The limit of a steady-state denoise forward: every weight read once, plus each sequence's
      // KV at the mean context; FLOPs of 2 x params per forwarded position. Block decode: B per
      // step, plus B for the commit riding on a block's first step. Canvas: the whole canvas every
      // step. Prefix/dual cache: the whole canvas on a block's first step, then the block (dual)
      // or the block and everything after it (prefix, on average half the canvas after it).
      const double canvas = prompt + gen;
      const bool bidir = mode_name == "canvas" || mode_name == "prefix_cache" || mode_name == "dual_cache";
      const double ctx = bidir ? canvas : prompt + gen / 2.0;
      const double kv_bytes = double(batch) * ctx * c.num_layers * 2.0 * c.num_kv_heads * c.head_dim * bytes_per_elem;
      double per_seq = block * (1.0 + 1.0 / steps);
      if (mode_name == "canvas") per_seq = canvas;
      if (mode_name == "dual_cache") per_seq = (canvas + (steps - 1.0) * block) / steps;
      if (mode_name == "prefix_cache") per_seq = (canvas + (steps - 1.0) * (block + gen / 2.0)) / steps;
      const double positions = double(batch) * per_seq;
      const double limit_s = std::max((params * bytes_per_elem + kv_bytes) / (copy_gbps * 1e9),
                                      2.0 * params * positions / (tflops * 1e12));
      for (int rep = 0; rep < repeat; ++rep) {
        const int64_t graphs0 = engine.num_cuda_graphs();
        for (int b = 0; b < batch; ++b) {
          std::vector<int32_t> ids(prompt);
          for (int i = 0; i < prompt; ++i) ids[i] = (7 * b + 13 * i) % (c.vocab_size - 2);
          engine.add_request(ids, sp);
        }
        int64_t calls = 0, tokens = 0;
        const int64_t replays0 = engine.num_cuda_graph_replays(), forwards0 = engine.num_forwards();
        const auto t0 = std::chrono::steady_clock::now();
        auto since_start = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
        std::unordered_map<int64_t, double> first_tokens;  // request id -> seconds to its first tokens
        std::vector<std::tuple<double, int64_t, bool>> step_ms;  // (ms, step, replayed a graph)
        double last = 0.0;
        while (engine.has_unfinished()) {
          const int64_t r0 = engine.num_cuda_graph_replays();
          const auto outs = engine.step();
          const double now = since_start();
          step_ms.emplace_back(1e3 * (now - last), calls, engine.num_cuda_graph_replays() > r0);
          last = now;
          for (const auto& o : outs) {
            tokens += static_cast<int64_t>(o.new_token_ids.size());
            if (!o.new_token_ids.empty()) first_tokens.emplace(o.request_id, now);
          }
          ++calls;
        }
        const double secs = since_start();
        const int64_t forwards = engine.num_forwards() - forwards0;
        if (step_times > 0) print_step_times(step_ms, step_times);
        const double first_ms = mean_ms(first_tokens);
        const double ms = 1e3 * secs / double(forwards);
        std::printf("| %s | %s | %s | %d | %d | %d | %d | %lld | %.2f | %.0f | %.3f | %.2f | %lld | %.1f |\n", name.c_str(),
                    label.c_str(), dtype.c_str(), batch, prompt, block, steps, static_cast<long long>(forwards), ms,
                    tokens / secs, 1e3 * limit_s, ms / (1e3 * limit_s),
                    static_cast<long long>(engine.num_cuda_graph_replays() - replays0), first_ms);
        std::fflush(stdout);
        std::fprintf(stderr, "  graphs alive %lld (%lld before the run), evicted so far %lld; forwards launched ahead so far %lld\n",
                     static_cast<long long>(engine.num_cuda_graphs()), static_cast<long long>(graphs0),
                     static_cast<long long>(engine.num_cuda_graph_evictions()),
                     static_cast<long long>(engine.num_forwards_launched_ahead()));
      }
    }
  }
  return 0;
}

// The library's errors (a bad model folder, a request it rejects, no GPU) as one line, not an abort.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_engine: %s\n", e.what());
    return 1;
  }
}

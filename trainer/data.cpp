// Token data sets: preparing train.bin/val.bin/meta.json from a source, and
// reading them back memory-mapped. No torch here: the CLI links this cheaply.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "planner/stable_random.h"
#include "trainer/trainer.h"

namespace moescale {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int32_t kLlmcMagic = 20240520;
constexpr size_t kLlmcHeaderBytes = 256 * sizeof(int32_t);
constexpr const char* kGcidePath = "/usr/share/dictd/gcide.dict.dz";
constexpr const char* kGcideIndexPath = "/usr/share/dictd/gcide.index";

// A portable generator, so data sets are identical everywhere.
using Rng = SplitMix64;

uint64_t mix(uint64_t a, uint64_t b) {
  return Rng(a * 0x2545f4914f6cdd1dull ^ b).next();
}

// Writes through a temporary name and renames, so readers never see half a file.
void write_atomically(const fs::path& path, const void* data, size_t bytes) {
  const fs::path tmp = path.string() + fmt::format(".tmp{}", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      throw std::runtime_error(fmt::format("cannot write {}: check the folder", tmp.string()));
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    out.flush();
    if (!out) throw std::runtime_error(fmt::format("writing {} failed (disk full?)", tmp.string()));
  }
  fs::rename(tmp, path);
}

void write_tokens(const fs::path& path, const uint16_t* tokens, size_t count) {
  static_assert(std::endian::native == std::endian::little, "token files are little-endian");
  write_atomically(path, tokens, count * sizeof(uint16_t));
}

std::string read_file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read {}", path.string()));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// ---- gcide -----------------------------------------------------------------

std::string gunzip_file(const char* path) {
  gzFile f = gzopen(path, "rb");
  if (!f) throw std::runtime_error(fmt::format("cannot open {}", path));
  std::string out;
  std::vector<char> buf(1 << 20);
  int n;
  while ((n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()))) > 0)
    out.append(buf.data(), n);
  const bool failed = n < 0;
  gzclose(f);
  if (failed) throw std::runtime_error(fmt::format("{} is corrupt: reinstall dict-gcide", path));
  return out;
}

// dictd's index numbers are base64 digits, most significant first.
int64_t dictd_number(std::string_view s) {
  static const std::string_view digits =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  int64_t v = 0;
  for (char c : s) {
    const auto d = digits.find(c);
    if (d == std::string_view::npos) throw std::runtime_error("gcide.index is corrupt");
    v = v * 64 + static_cast<int64_t>(d);
  }
  return v;
}

// Entry spans (offset, length) in file order, without dictd's 00-database headers.
std::vector<std::pair<int64_t, int64_t>> gcide_entries() {
  std::ifstream in(kGcideIndexPath);
  if (!in)
    throw std::runtime_error(fmt::format("cannot read {}: reinstall dict-gcide", kGcideIndexPath));
  std::map<int64_t, int64_t> spans;
  std::string line;
  while (std::getline(in, line)) {
    const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    if (t1 == std::string::npos || t2 == std::string::npos || line.starts_with("00-")) continue;
    spans.emplace(dictd_number(std::string_view(line).substr(t1 + 1, t2 - t1 - 1)),
                  dictd_number(std::string_view(line).substr(t2 + 1)));
  }
  return {spans.begin(), spans.end()};
}

// Source tags like [1913 Webster] or [WordNet 1.5 +PJC] are provenance, not English.
bool is_source_tag(std::string_view inside) {
  for (std::string_view k : {"Webster", "WordNet", "PJC", "Century", "RDH"})
    if (inside.find(k) != std::string_view::npos) return true;
  return inside == "AS";
}

// Drops dictionary markup: \pro*nun"ci*a`tion\ spans, source tags, <tags> and
// <ae/ entity codes, {cross-reference} braces; collapses whitespace.
void append_clean_entry(std::string_view e, std::string& out) {
  bool pending_space = false;
  auto put = [&](char c) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      pending_space = true;
      return;
    }
    if (pending_space && !out.empty() && out.back() != '\n') out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  };
  for (size_t i = 0; i < e.size(); ++i) {
    const char c = e[i];
    if (c == '\\') {
      const auto end = e.find('\\', i + 1);
      if (end != std::string_view::npos && end - i < 100) i = end;
      continue;
    }
    if (c == '[') {
      const auto end = e.find(']', i + 1);
      if (end != std::string_view::npos && is_source_tag(e.substr(i + 1, end - i - 1))) {
        i = end;
        continue;
      }
    }
    if (c == '<') {
      const auto end = e.find_first_of(">/", i + 1);
      if (end != std::string_view::npos && end - i < 40) {
        i = end;
        continue;
      }
    }
    if (c == '{' || c == '}') continue;
    put(c);
  }
  if (!out.empty() && out.back() != '\n') out.push_back('\n');
}

std::string gcide_text(int64_t max_bytes, const std::function<void(std::string_view)>& progress) {
  if (!fs::exists(kGcidePath))
    throw std::runtime_error(fmt::format(
        "{} not found: install dict-gcide (scripts/setup.sh does), or use --source file:PATH",
        kGcidePath));
  if (progress) progress("reading the GCIDE dictionary");
  const std::string raw = gunzip_file(kGcidePath);
  std::string text;
  text.reserve(raw.size());
  for (const auto& [offset, length] : gcide_entries()) {
    if (offset < 0 || offset + length > static_cast<int64_t>(raw.size()))
      throw std::runtime_error("gcide.index does not match gcide.dict.dz: reinstall dict-gcide");
    append_clean_entry(std::string_view(raw).substr(offset, length), text);
    if (max_bytes > 0 && static_cast<int64_t>(text.size()) >= max_bytes) break;
  }
  if (max_bytes > 0 && static_cast<int64_t>(text.size()) > max_bytes) text.resize(max_bytes);
  return text;
}

// ---- file: and llmc: ---------------------------------------------------------

std::vector<fs::path> files_under(const fs::path& root, std::string_view what) {
  if (!fs::exists(root))
    throw std::runtime_error(fmt::format("{} {} does not exist", what, root.string()));
  if (!fs::is_directory(root)) return {root};
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw std::runtime_error(fmt::format("{} {} is empty", what, root.string()));
  return files;
}

std::string text_files(const fs::path& root, int64_t max_bytes) {
  std::string text;
  for (const auto& f : files_under(root, "file: source")) {
    text += read_file_bytes(f);
    if (max_bytes > 0 && static_cast<int64_t>(text.size()) >= max_bytes) {
      text.resize(max_bytes);
      break;
    }
  }
  return text;
}

// Reads a llm.c shard (header + uint16) or a raw nanoGPT uint16 file.
std::vector<uint16_t> read_token_file(const fs::path& path) {
  const std::string bytes = read_file_bytes(path);
  size_t begin = 0, count = bytes.size() / 2;
  int32_t header[3] = {0, 0, 0};
  if (bytes.size() >= kLlmcHeaderBytes) std::memcpy(header, bytes.data(), sizeof(header));
  if (header[0] == kLlmcMagic) {
    if (header[1] != 1)
      throw std::runtime_error(
          fmt::format("{}: llm.c version {} is not supported (only version 1, uint16 tokens)",
                      path.string(), header[1]));
    begin = kLlmcHeaderBytes;
    count = static_cast<size_t>(header[2]);
    if (header[2] < 0 || begin + count * 2 > bytes.size())
      throw std::runtime_error(fmt::format("{}: header says {} tokens but the file is shorter",
                                           path.string(), header[2]));
  } else if (bytes.size() % 2 != 0) {
    throw std::runtime_error(
        fmt::format("{}: neither a llm.c shard (magic {}) nor raw uint16 tokens (odd size)",
                    path.string(), kLlmcMagic));
  }
  std::vector<uint16_t> tokens(count);
  std::memcpy(tokens.data(), bytes.data() + begin, count * 2);
  return tokens;
}

struct Stream {
  std::vector<uint16_t> train, val;  // val empty: split the train tail
  std::string tokenizer;
  int64_t vocab = 0;
  double entropy = std::numeric_limits<double>::quiet_NaN();
  json extra = json::object();
};

Stream llmc_stream(const fs::path& root, int64_t max_tokens) {
  Stream s;
  s.tokenizer = "external";
  for (const auto& f : files_under(root, "llmc: source")) {
    if (f.extension() != ".bin") continue;
    auto tokens = read_token_file(f);
    auto& dst = f.filename().string().find("val") != std::string::npos ? s.val : s.train;
    dst.insert(dst.end(), tokens.begin(), tokens.end());
  }
  if (s.train.empty())
    throw std::runtime_error(fmt::format("llmc: {} holds no training .bin tokens", root.string()));
  if (max_tokens > 0 && static_cast<int64_t>(s.train.size()) > max_tokens)
    s.train.resize(max_tokens);
  uint16_t top = 0;
  for (auto t : s.train) top = std::max(top, t);
  for (auto t : s.val) top = std::max(top, t);
  s.vocab = top + 1;  // a lower bound: llm.c files do not name their tokenizer
  return s;
}

Stream byte_stream(const std::string& text) {
  Stream s;
  s.tokenizer = "byte";
  s.vocab = 256;
  s.train.assign(reinterpret_cast<const unsigned char*>(text.data()),
                 reinterpret_cast<const unsigned char*>(text.data()) + text.size());
  return s;
}

// ---- synthetic:markov --------------------------------------------------------

int64_t ipow(int64_t b, int64_t e) {
  int64_t r = 1;
  while (e-- > 0) r *= b;
  return r;
}

// A de Bruijn sequence B(k, n) (Lyndon-word algorithm): its cycle visits every
// context of n tokens once, which makes the random chain irreducible.
std::vector<int32_t> de_bruijn(int64_t k, int64_t n) {
  std::vector<int32_t> seq, a(static_cast<size_t>(n + 1), 0);
  std::function<void(int64_t, int64_t)> db = [&](int64_t t, int64_t p) {
    if (t > n) {
      if (n % p == 0) seq.insert(seq.end(), a.begin() + 1, a.begin() + p + 1);
      return;
    }
    a[t] = a[t - p];
    db(t + 1, p);
    for (int64_t j = a[t - p] + 1; j < k; ++j) {
      a[t] = static_cast<int32_t>(j);
      db(t + 1, t);
    }
  };
  db(1, 1);
  return seq;
}

void check_markov(const MarkovOptions& o) {
  if (o.order < 1) throw std::invalid_argument("markov order must be at least 1");
  if (o.vocab < 2 || o.vocab > 65536)
    throw std::invalid_argument("markov vocab must be between 2 and 65536");
  if (o.branching < 1 || o.branching > o.vocab)
    throw std::invalid_argument(
        fmt::format("markov branching must be between 1 and vocab = {}", o.vocab));
  if (std::pow(static_cast<double>(o.vocab), static_cast<double>(o.order)) > 4e6)
    throw std::invalid_argument("markov vocab^order exceeds 4e6 contexts: lower order or vocab");
  if (o.tokens < 2) throw std::invalid_argument("markov tokens must be at least 2");
  // The chain holds contexts x branching successors (12 bytes each) in memory, and
  // the sample 2 bytes a token: refuse what would not fit rather than fail in new.
  const double transitions =
      std::pow(static_cast<double>(o.vocab), static_cast<double>(o.order)) * o.branching;
  if (transitions > 5e7)
    throw std::invalid_argument(fmt::format(
        "markov vocab^order x branching = {:.3g} transitions, over the limit of 5e7 (600 MB); "
        "lower branching, order or vocab",
        transitions));
  if (o.tokens > 4'000'000'000)
    throw std::invalid_argument(fmt::format(
        "markov tokens = {} is over the limit of 4e9 (8 GB in memory); sample fewer", o.tokens));
}

int64_t context_after(int64_t ctx, int64_t token, const MarkovChain& c) {
  return (ctx * c.vocab + token) % ipow(c.vocab, c.order);
}

Stream markov_stream(const MarkovOptions& o, uint64_t seed) {
  const MarkovChain chain = make_markov_chain(o, seed);
  Stream s;
  s.tokenizer = "markov";
  s.vocab = o.vocab;
  s.entropy = entropy_rate(chain);
  s.train = sample_markov(chain, o.tokens, mix(seed, 2));
  s.extra = {{"order", o.order}, {"branching", o.branching}, {"seed", seed}};
  return s;
}

MarkovOptions parse_markov_inline(std::string_view spec, MarkovOptions o) {
  size_t pos = 0;
  while (pos < spec.size()) {
    auto end = spec.find(',', pos);
    if (end == std::string_view::npos) end = spec.size();
    const auto item = spec.substr(pos, end - pos);
    const auto eq = item.find('=');
    if (eq == std::string_view::npos)
      throw std::invalid_argument(
          fmt::format("synthetic:markov option '{}' is not key=value", item));
    const auto key = item.substr(0, eq);
    int64_t value = 0;
    try {
      value = std::stoll(std::string(item.substr(eq + 1)));
    } catch (const std::exception&) {
      throw std::invalid_argument(
          fmt::format("synthetic:markov option '{}' needs an integer", item));
    }
    if (key == "order")
      o.order = value;
    else if (key == "vocab")
      o.vocab = value;
    else if (key == "branching")
      o.branching = value;
    else if (key == "tokens")
      o.tokens = value;
    else
      throw std::invalid_argument(fmt::format(
          "unknown synthetic:markov option '{}'; use order, vocab, branching, tokens", key));
    pos = end + 1;
  }
  return o;
}

Stream load_source(const DataPrepareOptions& o,
                   const std::function<void(std::string_view)>& progress) {
  const std::string& src = o.source;
  if (src == "gcide") {
    Stream s = byte_stream(gcide_text(o.max_tokens, progress));
    return s;
  }
  if (src.starts_with("file:")) return byte_stream(text_files(src.substr(5), o.max_tokens));
  if (src.starts_with("llmc:")) return llmc_stream(src.substr(5), o.max_tokens);
  if (src == "synthetic:markov" || src.starts_with("synthetic:markov:")) {
    const MarkovOptions m = src.size() > 17
                                ? parse_markov_inline(std::string_view(src).substr(17), o.markov)
                                : o.markov;
    check_markov(m);
    if (progress) progress(fmt::format("sampling {} tokens from a random Markov chain", m.tokens));
    return markov_stream(m, o.seed);
  }
  throw std::invalid_argument(fmt::format(
      "unknown data source '{}'; use gcide, file:PATH, llmc:PATH or synthetic:markov", src));
}

}  // namespace

// ---- public: markov ----------------------------------------------------------

MarkovChain make_markov_chain(const MarkovOptions& o, uint64_t seed) {
  check_markov(o);
  MarkovChain c{o.order, o.vocab, o.branching, {}, {}};
  const int64_t contexts = ipow(o.vocab, o.order);
  c.next.resize(static_cast<size_t>(contexts * o.branching));
  c.prob.resize(c.next.size());
  // Context x_{t-n..t-1} of the de Bruijn cycle; its successor becomes successor 0.
  const auto cycle = de_bruijn(o.vocab, o.order);
  std::vector<int32_t> forced(static_cast<size_t>(contexts), 0);
  int64_t ctx = 0;
  for (int64_t i = 0; i < o.order; ++i) ctx = ctx * o.vocab + cycle[i % cycle.size()];
  for (size_t i = 0; i < cycle.size(); ++i) {
    const int32_t nxt = cycle[(i + o.order) % cycle.size()];
    forced[ctx] = nxt;
    ctx = context_after(ctx, nxt, c);
  }
  Rng rng(mix(seed, 1));
  std::vector<int32_t> pool(static_cast<size_t>(o.vocab));
  for (int64_t x = 0; x < contexts; ++x) {
    std::iota(pool.begin(), pool.end(), 0);
    std::swap(pool[0], pool[forced[x]]);
    for (int64_t j = 1; j < o.branching; ++j)  // partial Fisher-Yates: distinct successors
      std::swap(pool[j], pool[j + rng.below(o.vocab - j)]);
    double total = 0;
    for (int64_t j = 0; j < o.branching; ++j) {
      const double w = -std::log(1.0 - rng.uniform());  // Dirichlet(1) weights
      c.next[x * o.branching + j] = pool[j];
      c.prob[x * o.branching + j] = w;
      total += w;
    }
    for (int64_t j = 0; j < o.branching; ++j) c.prob[x * o.branching + j] /= total;
  }
  return c;
}

double entropy_rate(const MarkovChain& c) {
  const int64_t contexts = ipow(c.vocab, c.order);
  std::vector<double> pi(static_cast<size_t>(contexts), 1.0 / contexts), nxt(pi.size());
  // Power iteration of the lazy chain (I+P)/2: same stationary law, never periodic.
  for (int iter = 0; iter < 100000; ++iter) {
    for (int64_t x = 0; x < contexts; ++x) nxt[x] = 0.5 * pi[x];
    for (int64_t x = 0; x < contexts; ++x)
      for (int64_t j = 0; j < c.branching; ++j)
        nxt[context_after(x, c.next[x * c.branching + j], c)] +=
            0.5 * pi[x] * c.prob[x * c.branching + j];
    double diff = 0;
    for (int64_t x = 0; x < contexts; ++x) diff += std::abs(nxt[x] - pi[x]);
    pi.swap(nxt);
    if (diff < 1e-13) break;
  }
  double h = 0;
  for (int64_t x = 0; x < contexts; ++x)
    for (int64_t j = 0; j < c.branching; ++j) {
      const double p = c.prob[x * c.branching + j];
      if (p > 0) h -= pi[x] * p * std::log(p);
    }
  return h;
}

std::vector<uint16_t> sample_markov(const MarkovChain& c, int64_t tokens, uint64_t seed) {
  Rng rng(seed);
  const int64_t contexts = ipow(c.vocab, c.order);
  int64_t ctx = static_cast<int64_t>(rng.below(contexts));
  std::vector<uint16_t> out(static_cast<size_t>(tokens));
  for (auto& t : out) {
    double u = rng.uniform();
    int64_t j = 0;
    while (j + 1 < c.branching && u >= c.prob[ctx * c.branching + j])
      u -= c.prob[ctx * c.branching + j++];
    t = static_cast<uint16_t>(c.next[ctx * c.branching + j]);
    ctx = context_after(ctx, t, c);
  }
  return out;
}

// ---- public: prepare -----------------------------------------------------------

DataSummary prepare_data(const DataPrepareOptions& o,
                         const std::function<void(std::string_view)>& progress) {
  if (o.out_dir.empty()) throw std::invalid_argument("--out is required: the folder to write");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    throw std::invalid_argument("--val-fraction must be in [0, 1)");
  Stream s = load_source(o, progress);
  if (s.val.empty()) {
    const auto n_val = static_cast<size_t>(std::llround(o.val_fraction * s.train.size()));
    s.val.assign(s.train.end() - n_val, s.train.end());
    s.train.resize(s.train.size() - n_val);
  }
  if (s.train.empty())
    throw std::runtime_error(fmt::format("source {} gave no training tokens", o.source));
  if (s.vocab > 65536) throw std::runtime_error("vocabulary exceeds uint16 tokens");

  const fs::path dir(o.out_dir);
  fs::create_directories(dir);
  write_tokens(dir / "train.bin", s.train.data(), s.train.size());
  write_tokens(dir / "val.bin", s.val.data(), s.val.size());
  json meta = {{"tokenizer", s.tokenizer},
               {"vocab_size", s.vocab},
               {"source", o.source},
               {"dtype", "uint16"},
               {"train_tokens", s.train.size()},
               {"val_tokens", s.val.size()},
               {"val_fraction", o.val_fraction},
               {"seed", o.seed}};
  meta["entropy_rate"] = std::isnan(s.entropy) ? json(nullptr) : json(s.entropy);
  if (!s.extra.empty()) meta["markov"] = s.extra;
  const std::string text = meta.dump(2) + "\n";
  write_atomically(dir / "meta.json", text.data(), text.size());  // last: marks the set complete

  DataSummary out{dir.string(),
                  o.source,
                  s.tokenizer,
                  s.vocab,
                  static_cast<int64_t>(s.train.size()),
                  static_cast<int64_t>(s.val.size()),
                  s.entropy};
  return out;
}

DataMeta read_data_meta(const std::string& data_dir) {
  const fs::path path = fs::path(data_dir) / "meta.json";
  if (!fs::exists(path))
    throw std::runtime_error(fmt::format(
        "no token data in {} (meta.json missing): run `moescale data prepare --source gcide "
        "--out {}` first",
        data_dir, data_dir));
  try {
    const json j = json::parse(read_file_bytes(path));
    DataMeta m;
    m.tokenizer = j.value("tokenizer", "external");
    m.source = j.value("source", "");
    m.vocab_size = j.at("vocab_size").get<int64_t>();
    const auto it = j.find("entropy_rate");
    m.entropy_rate = (it == j.end() || it->is_null()) ? std::numeric_limits<double>::quiet_NaN()
                                                      : it->get<double>();
    return m;
  } catch (const json::exception& e) {
    throw std::runtime_error(fmt::format("{} is not valid meta.json ({}): prepare the data again",
                                         path.string(), e.what()));
  }
}

// ---- public: reading -------------------------------------------------------------

TokenFile::TokenFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    throw std::runtime_error(fmt::format(
        "cannot open {}: run `moescale data prepare --source gcide --out DIR` first", path));
  struct stat st {};
  ::fstat(fd, &st);
  map_bytes_ = static_cast<size_t>(st.st_size);
  if (map_bytes_ > 0) {
    map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map_ == MAP_FAILED) {
      ::close(fd);
      map_ = nullptr;
      throw std::runtime_error(fmt::format("cannot memory-map {}", path));
    }
  }
  ::close(fd);
  const auto* bytes = static_cast<const unsigned char*>(map_);
  int32_t header[3] = {0, 0, 0};
  if (map_bytes_ >= kLlmcHeaderBytes) std::memcpy(header, bytes, sizeof(header));
  if (header[0] == kLlmcMagic) {
    if (header[1] != 1 || header[2] < 0 ||
        kLlmcHeaderBytes + static_cast<size_t>(header[2]) * 2 > map_bytes_) {
      ::munmap(map_, map_bytes_);  // the destructor does not run when a constructor throws
      throw std::runtime_error(
          fmt::format("{}: bad llm.c header (version {}, {} tokens)", path, header[1], header[2]));
    }
    tokens_ = reinterpret_cast<const uint16_t*>(bytes + kLlmcHeaderBytes);
    count_ = header[2];
  } else {
    tokens_ = reinterpret_cast<const uint16_t*>(bytes);
    count_ = static_cast<int64_t>(map_bytes_ / 2);
  }
}

TokenFile::~TokenFile() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
}

WindowSampler::WindowSampler(const TokenFile& file, int64_t seq_len, int64_t batch, uint64_t seed)
    : file_(file), seq_len_(seq_len), batch_(batch), seed_(seed) {
  if (file.size() < seq_len + 1)
    throw std::runtime_error(fmt::format(
        "{} holds {} tokens, fewer than one window of seq_len + 1 = {}: prepare more data or "
        "shorten seq_len",
        file.path(), file.size(), seq_len + 1));
}

void WindowSampler::fill(int64_t step, int64_t* inputs, int64_t* targets) const {
  Rng rng(mix(seed_, static_cast<uint64_t>(step)));
  const auto starts = static_cast<uint64_t>(file_.size() - seq_len_);
  const uint16_t* tok = file_.data();
  for (int64_t b = 0; b < batch_; ++b) {
    const auto start = static_cast<int64_t>(rng.below(starts));
    for (int64_t t = 0; t < seq_len_; ++t) {
      inputs[b * seq_len_ + t] = tok[start + t];
      targets[b * seq_len_ + t] = tok[start + t + 1];
    }
  }
}

}  // namespace moescale

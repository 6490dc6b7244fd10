// CSV import of finished runs: a small RFC 4180 reader (quoted fields, doubled quotes,
// CRLF, newlines inside quotes) and per-row validation that names row and column.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "fitting/fitting.h"

namespace moescale::fitting {
namespace {

// Error messages quote at most this much of a field: a 10 MB cell must not
// become a 10 MB error line.
constexpr std::size_t kShownChars = 40;
// Larger inputs are refused rather than read whole (a CSV of runs is small;
// /dev/zero is not a CSV).
constexpr std::size_t kMaxCsvBytes = std::size_t{256} << 20;

std::string shown(std::string_view text) {
  if (text.size() <= kShownChars) return std::string(text);
  return fmt::format("{}... ({} characters)", text.substr(0, kShownChars), text.size());
}

struct Record {
  int line = 0;  // where the record starts, 1-based
  std::vector<std::string> fields;
};

std::vector<Record> parse_csv(std::string_view text, const std::string& source) {
  std::vector<Record> records;
  Record rec{1, {}};
  std::string field;
  int line = 1;
  bool in_quotes = false, field_started = false;
  auto end_field = [&] {
    rec.fields.push_back(std::move(field));
    field.clear();
    field_started = false;
  };
  auto end_record = [&] {
    end_field();
    // Blank lines are not records.
    if (!(rec.fields.size() == 1 && rec.fields[0].empty())) records.push_back(std::move(rec));
    rec = Record{line, {}};
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_quotes) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        in_quotes = false;
      } else {
        if (c == '\n') ++line;
        field += c;
      }
    } else if (c == '"' && !field_started) {
      in_quotes = field_started = true;
    } else if (c == ',') {
      end_field();
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      continue;
    } else if (c == '\n' || c == '\r') {  // LF, CRLF, or a bare CR (old Mac files)
      ++line;
      end_record();
    } else {
      field += c;
      field_started = true;
    }
  }
  if (in_quotes)
    throw std::invalid_argument(fmt::format(
        "{} row {}: a quoted field is not closed; add the closing '\"'", source, rec.line));
  if (field_started || !rec.fields.empty() || !field.empty()) end_record();
  return records;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

const std::vector<std::string>& mapping_keys() {
  static const std::vector<std::string> keys = {"N", "NT", "D",    "C",     "E",
                                                "K", "G",  "loss", "budget"};
  return keys;
}

void check_mapping(const ColumnMapping& mapping) {
  for (const auto& [key, header] : mapping)
    if (std::find(mapping_keys().begin(), mapping_keys().end(), key) == mapping_keys().end())
      throw std::invalid_argument(fmt::format(
          "column mapping: unknown key \"{}\"; keys are N, NT, D, C, E, K, G, loss, budget", key));
  if (!mapping.count("N") || !mapping.count("loss"))
    throw std::invalid_argument(
        "column mapping: N (active parameters) and loss are required, e.g. N=\"Model Size\"");
  if (mapping.count("D") == mapping.count("C"))
    throw std::invalid_argument(
        "column mapping: give exactly one of D (tokens) or C (training FLOP, D = C / (6 N))");
}

double parse_value(const std::string& raw, std::string_view key, const std::string& where) {
  const std::string_view text = trim(raw);
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec == std::errc::invalid_argument || end != text.data() + text.size())
    throw std::invalid_argument(
        fmt::format("{}: {} \"{}\" is not a number", where, key, shown(raw)));
  if (ec == std::errc::result_out_of_range || !std::isfinite(v))
    throw std::invalid_argument(fmt::format("{}: {} \"{}\" is not finite", where, key, shown(raw)));
  if (!(v > 0))
    throw std::invalid_argument(fmt::format(
        "{}: {} is {}, but must be positive; drop or fix the row", where, key, shown(raw)));
  return v;
}

}  // namespace

std::vector<Observation> parse_observations_csv(std::string_view text, const ColumnMapping& mapping,
                                                const std::string& source) {
  check_mapping(mapping);
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // a UTF-8 byte-order mark
  if (text.find('\0') != std::string_view::npos)
    throw std::invalid_argument(fmt::format(
        "{}: holds NUL bytes, so it is not a CSV text file; export the runs as CSV", source));
  const std::vector<Record> records = parse_csv(text, source);
  if (records.empty()) throw std::invalid_argument(fmt::format("{}: no header row", source));
  const auto& header = records[0].fields;
  std::map<std::string, std::size_t> index;
  for (const auto& [key, name] : mapping) {
    const std::string& column = name;  // clang before 16 cannot capture a structured binding
    const auto it = std::find_if(header.begin(), header.end(),
                                 [&](const std::string& h) { return trim(h) == trim(column); });
    if (it == header.end()) {
      std::string have;
      for (std::size_t i = 0; i < header.size() && i < 20; ++i)
        have += (have.empty() ? "\"" : ", \"") + shown(header[i]) + "\"";
      if (header.size() > 20) have += fmt::format(" and {} more", header.size() - 20);
      throw std::invalid_argument(
          fmt::format("{}: column \"{}\" (mapped to {}) is not in the header; columns are: {}",
                      source, shown(name), key, have));
    }
    index[key] = static_cast<std::size_t>(it - header.begin());
  }
  std::vector<Observation> out;
  for (std::size_t r = 1; r < records.size(); ++r) {
    const Record& rec = records[r];
    const std::string where = fmt::format("{} row {}", source, rec.line);
    if (rec.fields.size() != header.size())
      throw std::invalid_argument(
          fmt::format("{}: {} fields, the header has {}", where, rec.fields.size(), header.size()));
    auto get = [&](const std::string& key, double fallback) {
      const auto it = index.find(key);
      return it == index.end() ? fallback : parse_value(rec.fields[it->second], key, where);
    };
    Observation o;
    o.where = where;
    o.n_active = get("N", 0);
    o.n_total = get("NT", o.n_active);
    o.tokens = index.count("D") ? get("D", 0) : tokens_for_compute(get("C", 0), o.n_active);
    if (!std::isfinite(o.tokens) || !(o.tokens > 0))
      throw std::invalid_argument(fmt::format(
          "{}: D = C / (6 N) is {:g}, which no law can use; drop or fix the row", where, o.tokens));
    o.experts = get("E", 1);
    o.top_k = get("K", 1);
    o.granularity = get("G", 1);
    o.loss = get("loss", 0);
    o.budget = get("budget", 0);
    out.push_back(std::move(o));
  }
  if (out.empty()) throw std::invalid_argument(fmt::format("{}: no data rows", source));
  return out;
}

std::vector<Observation> read_observations_csv(const std::string& path,
                                               const ColumnMapping& mapping) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(fmt::format("{}: cannot open the file", path));
  // Read in chunks with a cap: a device or a huge file must not exhaust memory.
  std::string text;
  std::string chunk(std::size_t{1} << 20, '\0');
  while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0) {
    const auto got = static_cast<std::size_t>(in.gcount());
    if (std::string_view(chunk.data(), got).find('\0') != std::string_view::npos)
      throw std::invalid_argument(fmt::format(
          "{}: holds NUL bytes, so it is not a CSV text file; export the runs as CSV", path));
    if (text.size() + got > kMaxCsvBytes)
      throw std::invalid_argument(
          fmt::format("{}: larger than {} MiB, the most an import reads; split the file", path,
                      kMaxCsvBytes >> 20));
    text.append(chunk.data(), got);
  }
  return parse_observations_csv(text, mapping, path);
}

std::vector<Observation> exclude_top_loss(std::vector<Observation> observations, std::size_t k) {
  if (k >= observations.size())
    throw std::invalid_argument(
        fmt::format("cannot exclude the {} highest losses of {} runs: nothing would be left", k,
                    observations.size()));
  // Stable, so runs with equal losses keep their order.
  std::vector<std::size_t> order(observations.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return observations[a].loss > observations[b].loss;
  });
  std::vector<bool> drop(observations.size(), false);
  for (std::size_t i = 0; i < k; ++i) drop[order[i]] = true;
  std::vector<Observation> kept;
  for (std::size_t i = 0; i < observations.size(); ++i)
    if (!drop[i]) kept.push_back(std::move(observations[i]));
  return kept;
}

void validate_observations(const std::vector<Observation>& observations) {
  for (std::size_t i = 0; i < observations.size(); ++i) {
    const Observation& o = observations[i];
    const std::string where = o.where.empty() ? fmt::format("point {}", i + 1) : o.where;
    const std::pair<const char*, double> fields[] = {
        {"N", o.n_active}, {"NT", o.n_total == 0 ? o.n_active : o.n_total},
        {"D", o.tokens},   {"E", o.experts},
        {"K", o.top_k},    {"G", o.granularity},
        {"loss", o.loss}};
    for (const auto& [name, v] : fields)
      if (!std::isfinite(v) || !(v > 0))
        throw std::invalid_argument(fmt::format(
            "{}: {} is {}, but must be a positive finite number; drop or fix it", where, name, v));
  }
}

}  // namespace moescale::fitting

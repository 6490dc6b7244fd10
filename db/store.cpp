// Typed queries over sweeps, runs, metrics, observations and fits.
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <stdexcept>
#include <vector>

#include "db/db.h"
#include "db/statement.h"
#include "planner/stable_random.h"

namespace moescale {

std::string to_string(RunStatus s) {
  switch (s) {
    case RunStatus::planned: return "planned";
    case RunStatus::running: return "running";
    case RunStatus::done: return "done";
    case RunStatus::failed: return "failed";
    case RunStatus::diverged: return "diverged";
  }
  return "?";
}

RunStatus parse_run_status(std::string_view name) {
  for (auto s : {RunStatus::planned, RunStatus::running, RunStatus::done, RunStatus::failed,
                 RunStatus::diverged})
    if (to_string(s) == name) return s;
  throw std::invalid_argument(
      fmt::format("unknown run status '{}'; use planned, running, done, failed or diverged", name));
}

std::string RunOwner::label() const {
  std::string out = fmt::format("{}:{}", host, pid);
  if (!job.empty()) out += " slurm " + job;
  return out;
}

RunOwner RunOwner::this_process(int threads) {
  RunOwner o;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  o.host = host;
  o.pid = getpid();
  o.threads = threads;
  const char* job = std::getenv("SLURM_ARRAY_JOB_ID");
  if (!job || !*job) job = std::getenv("SLURM_JOB_ID");
  if (job && *job) {
    o.job = job;
    if (const char* task = std::getenv("SLURM_ARRAY_TASK_ID"); task && *task)
      o.job += std::string("_") + task;
  }
  return o;
}

bool owner_provably_dead(const std::string& host, int64_t pid) {
  if (pid <= 0 || host.empty()) return false;
  char here[256] = {};
  gethostname(here, sizeof here - 1);
  if (host != here) return false;
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  // A killed child not yet reaped by its parent still answers kill().
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

std::string default_database_path(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("MOESCALE_DB"); env && *env) return env;
  return "moescale.db";
}

bool is_server_location(const std::string& location) {
  return location.starts_with("postgresql://") || location.starts_with("postgres://");
}

namespace {

// Where the USER[:PASSWORD] of a postgresql:// URL ends: its last '@' before the query,
// so that a password holding an unencoded '@' is still recognised as one.
struct UserInfo {
  size_t start = 0, colon = std::string::npos, at = std::string::npos;
};

std::optional<UserInfo> user_info(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return std::nullopt;
  UserInfo u;
  u.start = scheme + 3;
  const size_t query = url.find('?', u.start);
  const size_t at = url.rfind('@', query == std::string::npos ? std::string::npos : query);
  if (at == std::string::npos || at < u.start) return std::nullopt;
  u.at = at;
  const size_t colon = url.find(':', u.start);
  if (colon < at) u.colon = colon;
  return u;
}

// The password of a URL as written and as libpq decodes it: what a message must not show.
std::vector<std::string> secrets(const std::string& url) {
  std::vector<std::string> out;
  if (const auto u = user_info(url); u && u->colon != std::string::npos)
    out.push_back(url.substr(u->colon + 1, u->at - u->colon - 1));
  for (size_t p = url.find("password="); p != std::string::npos; p = url.find("password=", p + 1))
    out.push_back(url.substr(p + 9, url.find('&', p) - p - 9));
  std::vector<std::string> decoded;
  for (const std::string& s : out) {
    std::string d;
    for (size_t i = 0; i < s.size(); ++i) {
      const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); };
      if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) && hex(s[i + 2])) {
        d += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        d += s[i];
      }
    }
    decoded.push_back(d);
  }
  out.insert(out.end(), decoded.begin(), decoded.end());
  std::erase_if(out, [](const std::string& s) { return s.empty(); });
  return out;
}

// libpq's keywords: text that starts with one of them and '=' is connection text, not a path.
bool looks_like_connection_text(const std::string& location) {
  static const char* const kKeywords[] = {"host",
                                          "hostaddr",
                                          "port",
                                          "dbname",
                                          "user",
                                          "password",
                                          "passfile",
                                          "service",
                                          "sslmode",
                                          "connect_timeout",
                                          "options",
                                          "application_name",
                                          "target_session_attrs"};
  std::string first = location.substr(0, location.find_first_of(" \t"));
  first.erase(0, first.find_first_not_of(" \t"));
  const size_t eq = first.find('=');
  if (eq == std::string::npos) return false;
  std::string key = first.substr(0, eq);
  while (!key.empty() && key.back() == ' ') key.pop_back();
  for (const char* k : kKeywords)
    if (key == k) return true;
  return location.find(" password=") != std::string::npos || location.find("password=") == 0;
}

}  // namespace

// postgresql://user:secret@host/db -> postgresql://user@host/db, and password=… dropped.
std::string location_for_messages(const std::string& url) {
  if (url.find("://") == std::string::npos) return url;
  std::string out = url;
  if (const auto u = user_info(out); u && u->colon != std::string::npos)
    out.erase(u->colon, u->at - u->colon);
  for (auto p = out.find("password="); p != std::string::npos; p = out.find("password=")) {
    const auto end = out.find('&', p);
    out.erase(p, end == std::string::npos ? std::string::npos : end - p + 1);
  }
  while (!out.empty() && (out.back() == '&' || out.back() == '?')) out.pop_back();
  return out;
}

std::string redact_location(const std::string& text, const std::string& location) {
  std::string out = text;
  const std::string shown = location_for_messages(location);
  for (size_t p = out.find(location); !location.empty() && p != std::string::npos;
       p = out.find(location, p + shown.size()))
    out.replace(p, location.size(), shown);
  // Four characters or more: a shorter password would mask ordinary words too.
  for (const std::string& secret : secrets(location)) {
    if (secret.size() < 4) continue;
    for (size_t p = out.find(secret); p != std::string::npos; p = out.find(secret, p + 3))
      out.replace(p, secret.size(), "***");
  }
  return out;
}

// Refuses, without repeating a password, what is neither a PostgreSQL URL nor a file path.
static void check_location(const std::string& location) {
  if (is_server_location(location)) {
    const auto u = user_info(location);
    if (u && location.substr(u->start, u->at - u->start).find('@') != std::string::npos)
      throw std::invalid_argument(fmt::format(
          "the store URL {} holds an unencoded '@' in its user name or password: write it as "
          "%40 (or keep the password in PGPASSWORD or ~/.pgpass)",
          location_for_messages(location)));
    return;
  }
  if (looks_like_connection_text(location))
    throw std::invalid_argument(
        "--db holds libpq connection text (key=value ...), which moescale does not take: give a "
        "URL, postgresql://USER@HOST[:PORT]/DATABASE (the password in PGPASSWORD or ~/.pgpass), "
        "or the path of a SQLite file");
  if (const auto scheme = location.find("://");
      scheme != std::string::npos && location.find('/') == scheme + 1)
    throw std::invalid_argument(fmt::format(
        "--db {} names a scheme moescale does not know: give postgresql://USER@HOST/DATABASE or "
        "the path of a SQLite file",
        location_for_messages(location)));
}

static_assert(static_cast<int>(Database::Mode::read_only) ==
              static_cast<int>(sql::OpenMode::read_only));

Database::Database(const std::string& location, Mode mode) : path_(location) {
  check_location(location);
  const auto m = static_cast<sql::OpenMode>(mode);
  conn_ = is_server_location(location) ? sql::open_postgresql(location, m)
                                       : sql::open_sqlite(location, m);
}

Database::~Database() = default;

const std::string& Database::display_name() const {
  return conn_->name();
}

int Database::schema_version() const {
  return conn_->schema_version();
}

std::string Database::store_identity() const {
  sql::Statement s(*conn_, "SELECT identity FROM store WHERE only_row = 1");
  if (!s.step()) throw std::runtime_error(fmt::format("{} has no store identity", conn_->name()));
  return s.text(0);
}

bool RunRecord::stale(double stale_after) const {
  if (status != RunStatus::running) return false;
  if (owner_provably_dead(owner_host, owner_pid)) return true;
  return !heartbeat_age || *heartbeat_age > stale_after;
}

namespace {

std::string run_columns(const sql::Dialect& d) {
  return "r.id, r.sweep_id, s.name, r.key, r.spec, r.compute_6n, r.compute_full, "
         "r.est_seconds, r.budget, r.status, r.worker, r.heartbeat, r.created_at, r.started_at, "
         "r.finished_at, r.final_loss, r.wall_seconds, r.steps_done, r.error, r.claim, "
         "r.owner_host, r.owner_pid, r.owner_job, r.owner_threads, r.source, " +
         d.age_seconds("r.heartbeat");
}

RunRecord read_run(const sql::Statement& s) {
  RunRecord r;
  r.id = s.integer(0);
  r.sweep_id = s.integer(1);
  r.sweep = s.text(2);
  r.key = s.text(3);
  r.plan.spec = run_spec_from_json(s.text(4));
  // Stores planned before configs were checked may hold products that overflow;
  // refuse them by name instead of dividing by zero later.
  int64_t per_step = 0;
  if (__builtin_mul_overflow(r.plan.spec.train.batch_size, r.plan.spec.shape.seq_len, &per_step) ||
      per_step <= 0 || r.plan.spec.tokens < 0)
    throw std::runtime_error(fmt::format(
        "run {} of sweep '{}' has an impossible plan (batch_size {} x seq_len {}); remove the "
        "sweep with `moescale rm sweep {}` and plan it again",
        r.id, r.sweep, r.plan.spec.train.batch_size, r.plan.spec.shape.seq_len, r.sweep));
  r.plan.params = count_params(r.plan.spec.shape);
  r.plan.compute_6n = s.real(5);
  r.plan.compute_full = s.real(6);
  r.plan.est_seconds = s.real(7);
  r.plan.budget = s.real(8);
  r.status = parse_run_status(s.text(9));
  r.worker = s.text(10);
  r.heartbeat = s.text(11);
  r.created_at = s.text(12);
  r.started_at = s.text(13);
  r.finished_at = s.text(14);
  r.final_loss = s.optional_real(15);
  r.wall_seconds = s.optional_real(16);
  r.steps_done = s.integer(17);
  r.error = s.text(18);
  r.claim_generation = s.integer(19);
  r.owner_host = s.text(20);
  r.owner_pid = s.integer(21);
  r.owner_job = s.text(22);
  r.owner_threads = static_cast<int>(s.integer(23));
  r.source = s.text(24);
  r.heartbeat_age = s.optional_real(25);
  return r;
}

SweepRecord read_sweep(const sql::Statement& s) {
  return {s.integer(0), s.text(1), s.text(2), s.text(3), s.text(4)};
}

}  // namespace

Database::PlanSaved Database::save_plan(const SweepConfig& config,
                                        const std::vector<PlannedRun>& runs) {
  sql::Transaction tx(*conn_);
  PlanSaved saved;
  if (auto existing = find_sweep(config.name)) {
    if (existing->kind != "planned")
      throw std::runtime_error(
          fmt::format("sweep '{}' holds imported observations; give the planned sweep another name",
                      config.name));
    saved.sweep_id = existing->id;
    sql::Statement(*conn_, "UPDATE sweeps SET config = ?1 WHERE id = ?2")
        .bind(1, config.text)
        .bind(2, saved.sweep_id)
        .run();
  } else {
    sql::Statement insert(
        *conn_, "INSERT INTO sweeps(name, kind, config) VALUES(?1, 'planned', ?2) RETURNING id");
    insert.bind(1, config.name).bind(2, config.text);
    saved.sweep_id = insert.returned_integer();
  }
  sql::Statement insert(*conn_,
                        "INSERT INTO runs(sweep_id, key, spec, router, experts, top_k, "
                        "d_model, n_layers, n_active, n_total, n_embedding, tokens, compute_6n, "
                        "compute_full, est_seconds, budget) "
                        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
                        "?15, ?16) ON CONFLICT DO NOTHING");
  for (const PlannedRun& r : runs) {
    const ModelShape& s = r.spec.shape;
    insert.bind(1, saved.sweep_id).bind(2, r.spec.key()).bind(3, to_json(r.spec));
    insert.bind(4, to_string(s.router)).bind(5, s.experts).bind(6, s.top_k);
    insert.bind(7, s.d_model).bind(8, s.n_layers).bind(9, r.params.active);
    insert.bind(10, r.params.total).bind(11, r.params.embedding).bind(12, r.spec.tokens);
    insert.bind(13, r.compute_6n).bind(14, r.compute_full).bind(15, r.est_seconds);
    insert.bind(16, r.budget);
    (insert.run() > 0 ? saved.added : saved.existing)++;
  }
  tx.commit();
  return saved;
}

std::vector<SweepRecord> Database::sweeps() const {
  sql::Statement s(*conn_, "SELECT id, name, kind, config, created_at FROM sweeps ORDER BY id");
  std::vector<SweepRecord> out;
  while (s.step()) out.push_back(read_sweep(s));
  return out;
}

std::optional<SweepRecord> Database::find_sweep(const std::string& name) const {
  sql::Statement s(*conn_, "SELECT id, name, kind, config, created_at FROM sweeps WHERE name = ?1");
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return read_sweep(s);
}

SweepRecord Database::sweep(const std::string& name) const {
  if (auto s = find_sweep(name)) return *s;
  std::string known;
  for (const auto& s : sweeps()) known += (known.empty() ? "" : ", ") + s.name;
  throw std::runtime_error(fmt::format("no sweep named '{}' in {}; known sweeps: {}", name,
                                       conn_->name(), known.empty() ? "none" : known));
}

std::vector<RunRecord> Database::runs(const std::optional<std::string>& sweep_name,
                                      const std::optional<RunStatus>& status) const {
  if (sweep_name) sweep(*sweep_name);  // a clear error for an unknown name
  const std::string text = fmt::format(
      "SELECT {} FROM runs r JOIN sweeps s ON s.id = r.sweep_id "
      "WHERE (?1 IS NULL OR s.name = ?1) AND (?2 IS NULL OR r.status = ?2) "
      "ORDER BY s.id, r.budget, r.experts, r.router, r.n_active, r.id",
      run_columns(sql::Dialect{conn_->engine()}));
  sql::Statement s(*conn_, text);
  s.bind(1, sweep_name);
  s.bind(2, status ? std::optional<std::string>(to_string(*status)) : std::nullopt);
  std::vector<RunRecord> out;
  while (s.step()) out.push_back(read_run(s));
  return out;
}

RunRecord Database::run(int64_t id) const {
  const std::string text =
      fmt::format("SELECT {} FROM runs r JOIN sweeps s ON s.id = r.sweep_id WHERE r.id = ?1",
                  run_columns(sql::Dialect{conn_->engine()}));
  sql::Statement s(*conn_, text);
  s.bind(1, id);
  if (!s.step())
    throw std::runtime_error(fmt::format("no run with id {} in {}", id, conn_->name()));
  return read_run(s);
}

std::optional<RunRecord> Database::claim_run(const std::string& sweep_name, const RunOwner& owner,
                                             std::optional<int64_t> run_id, double stale_seconds,
                                             bool retry_failed) {
  sql::Transaction tx(*conn_);
  const SweepRecord sw = sweep(sweep_name);
  // Runs whose owner died on this host go back to planned at once, with a word why.
  sql::Statement held(*conn_,
                      "SELECT id, owner_pid, worker, claim FROM runs WHERE sweep_id = ?1 AND "
                      "status = 'running' AND owner_host = ?2 AND owner_host != ''");
  held.bind(1, sw.id).bind(2, owner.host);
  struct Orphan {
    int64_t id, generation;
    std::string worker;
  };
  std::vector<Orphan> orphaned;
  while (held.step())
    if (owner_provably_dead(owner.host, held.integer(1)))
      orphaned.push_back({held.integer(0), held.integer(3), held.text(2)});
  // Named by generation: on PostgreSQL another claimer may have taken it back and
  // claimed it meanwhile, and that claim must stand.
  for (const Orphan& o : orphaned)
    sql::Statement(*conn_,
                   "UPDATE runs SET status = 'planned', claim = claim + 1, error = ?2 WHERE id = "
                   "?1 AND claim = ?3 AND status = 'running'")
        .bind(1, o.id)
        .bind(2, fmt::format("taken back: its worker {} is gone", o.worker))
        .bind(3, o.generation)
        .run();
  const sql::Dialect d{conn_->engine()};
  sql::Statement pick(
      *conn_, fmt::format("SELECT id FROM runs WHERE sweep_id = ?1 AND (?2 IS NULL OR id = ?2) AND "
                          "(status = 'planned' OR (?4 != 0 AND status = 'failed') OR "
                          "(status = 'running' AND (heartbeat = '' OR {} > ?3))) "
                          "ORDER BY budget, n_active, experts, router, id LIMIT 1{}",
                          d.age_seconds("heartbeat"), d.lock_skip_locked()));
  pick.bind(1, sw.id).bind(2, run_id).bind(3, stale_seconds).bind(4, retry_failed ? 1 : 0);
  if (!pick.step()) {
    tx.commit();  // keep what was taken back from dead owners
    return std::nullopt;
  }
  const int64_t id = pick.integer(0);
  sql::Statement(*conn_,
                 fmt::format("UPDATE runs SET status = 'running', worker = ?1, heartbeat = {0}, "
                             "started_at = {0}, error = '', claim = claim + 1, owner_host = ?3, "
                             "owner_pid = ?4, owner_job = ?5, owner_threads = ?6 WHERE id = ?2",
                             d.now()))
      .bind(1, owner.label())
      .bind(2, id)
      .bind(3, owner.host)
      .bind(4, owner.pid)
      .bind(5, owner.job)
      .bind(6, owner.threads)
      .run();
  RunRecord claimed = run(id);
  tx.commit();
  return claimed;
}

// Inside a transaction: refreshes the heartbeat if the claim still holds, else throws.
void Database::check_claim(const Claim& claim, std::optional<int64_t> steps_done) {
  const int64_t refreshed =
      sql::Statement(*conn_,
                     fmt::format("UPDATE runs SET heartbeat = {}, steps_done = CASE WHEN ?3 > "
                                 "steps_done THEN ?3 ELSE steps_done END WHERE id = ?1 AND "
                                 "claim = ?2 AND status = 'running'",
                                 sql::Dialect{conn_->engine()}.now()))
          .bind(1, claim.run_id)
          .bind(2, claim.generation)
          .bind(3, steps_done)
          .run();
  if (refreshed > 0) return;
  std::string who = "it is no longer running";
  sql::Statement s(*conn_, "SELECT status, worker, claim FROM runs WHERE id = ?1");
  s.bind(1, claim.run_id);
  if (!s.step())
    throw LostClaim(fmt::format("run {} is gone from {}", claim.run_id, conn_->name()));
  if (s.integer(2) != claim.generation)
    who =
        fmt::format("it was claimed again by {}", s.text(1).empty() ? "another worker" : s.text(1));
  throw LostClaim(fmt::format("run {} is no longer ours ({}, status {}); nothing was written",
                              claim.run_id, who, s.text(0)));
}

void Database::record_metric(const Claim& claim, const MetricRecord& m) {
  sql::Transaction tx(*conn_);
  check_claim(claim, m.step);
  sql::Statement(*conn_,
                 "INSERT INTO metrics(run_id, step, split, tokens, loss, lr, aux_loss, "
                 "tokens_per_s, bits_per_byte, elapsed_s, expert_load) "
                 "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
                 "ON CONFLICT(run_id, step, split) DO UPDATE SET tokens = excluded.tokens, "
                 "loss = excluded.loss, lr = excluded.lr, aux_loss = excluded.aux_loss, "
                 "tokens_per_s = excluded.tokens_per_s, bits_per_byte = excluded.bits_per_byte, "
                 "elapsed_s = excluded.elapsed_s, expert_load = excluded.expert_load")
      .bind(1, claim.run_id)
      .bind(2, m.step)
      .bind(3, m.split)
      .bind(4, m.tokens)
      .bind(5, m.loss)
      .bind(6, m.lr)
      .bind(7, m.aux_loss)
      .bind(8, m.tokens_per_s)
      .bind(9, m.bits_per_byte)
      .bind(10, m.elapsed_s)
      .bind(11, m.expert_load)
      .run();
  tx.commit();
}

void Database::heartbeat(const Claim& claim) {
  sql::Transaction tx(*conn_);
  check_claim(claim, std::nullopt);
  tx.commit();
}

void Database::finish_run(const Claim& claim, RunStatus status, std::optional<double> final_loss,
                          double wall_seconds, int64_t steps_done, const std::string& error) {
  sql::Transaction tx(*conn_);
  check_claim(claim, std::nullopt);
  sql::Statement(*conn_,
                 fmt::format("UPDATE runs SET status = ?2, final_loss = ?3, wall_seconds = ?4, "
                             "steps_done = ?5, error = ?6, finished_at = {} WHERE id = ?1",
                             sql::Dialect{conn_->engine()}.now()))
      .bind(1, claim.run_id)
      .bind(2, to_string(status))
      .bind(3, final_loss)
      .bind(4, wall_seconds)
      .bind(5, steps_done)
      .bind(6, error)
      .run();
  tx.commit();
}

void Database::release_run(const Claim& claim, int64_t steps_done, const std::string& error) {
  sql::Transaction tx(*conn_);
  check_claim(claim, std::nullopt);
  sql::Statement(*conn_,
                 "UPDATE runs SET status = 'planned', worker = '', owner_host = '', owner_pid = 0, "
                 "owner_job = '', owner_threads = 0, steps_done = ?2, error = ?3 WHERE id = ?1")
      .bind(1, claim.run_id)
      .bind(2, steps_done)
      .bind(3, error)
      .run();
  tx.commit();
}

void Database::record_simulated(const std::string& sweep_name,
                                const std::vector<std::pair<int64_t, double>>& losses) {
  sql::Transaction tx(*conn_);
  const SweepRecord sw = sweep(sweep_name);
  sql::Statement update(
      *conn_, fmt::format("UPDATE runs SET status = 'done', source = 'simulated', "
                          "final_loss = ?3, wall_seconds = 0, steps_done = ?4, error = '', "
                          "worker = 'simulate', finished_at = {} "
                          "WHERE id = ?1 AND sweep_id = ?2 AND status = 'planned'",
                          sql::Dialect{conn_->engine()}.now()));
  for (const auto& [id, loss] : losses) {
    update.bind(1, id).bind(2, sw.id).bind(3, loss).bind(4, run(id).plan.spec.steps());
    if (update.run() != 1)
      throw std::runtime_error(fmt::format(
          "run {} is not a planned run of sweep '{}'; nothing was recorded", id, sweep_name));
  }
  tx.commit();
}

Database::HostWorkers Database::active_workers(const std::string& host, int64_t except_pid) const {
  sql::Statement s(*conn_,
                   "SELECT owner_pid, max(owner_threads) FROM runs WHERE status = 'running' AND "
                   "owner_host = ?1 AND owner_pid != ?2 GROUP BY owner_pid");
  s.bind(1, host).bind(2, except_pid);
  HostWorkers w;
  while (s.step()) {
    if (owner_provably_dead(host, s.integer(0))) continue;
    ++w.processes;
    w.threads += static_cast<int>(s.integer(1));
  }
  return w;
}

std::vector<MetricRecord> Database::metrics(int64_t run_id, const std::string& split) const {
  sql::Statement s(*conn_,
                   "SELECT run_id, step, tokens, split, loss, lr, aux_loss, tokens_per_s, "
                   "bits_per_byte, elapsed_s, expert_load FROM metrics "
                   "WHERE run_id = ?1 AND (?2 = '' OR split = ?2) ORDER BY step, split");
  s.bind(1, run_id).bind(2, split);
  std::vector<MetricRecord> out;
  while (s.step()) {
    MetricRecord m;
    m.run_id = s.integer(0);
    m.step = s.integer(1);
    m.tokens = s.integer(2);
    m.split = s.text(3);
    m.loss = s.real(4);
    m.lr = s.optional_real(5);
    m.aux_loss = s.optional_real(6);
    m.tokens_per_s = s.optional_real(7);
    m.bits_per_byte = s.optional_real(8);
    m.elapsed_s = s.optional_real(9);
    m.expert_load = s.text(10);
    out.push_back(std::move(m));
  }
  return out;
}

namespace {
// The values of a row, not its label: the same data imported from another path is
// still the same data.
std::string row_hash(const ObservationRecord& o) {
  const std::string text =
      fmt::format("{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g},{:.17g}", o.n_active, o.n_total,
                  o.tokens, o.experts, o.top_k, o.granularity, o.loss);
  return fmt::format("{:016x}", fnv1a(text));
}
}  // namespace

Database::ImportSaved Database::import_observations(const std::string& sweep_name,
                                                    const std::string& source,
                                                    const std::vector<ObservationRecord>& rows,
                                                    bool append) {
  sql::Transaction tx(*conn_);
  ImportSaved saved;
  if (auto existing = find_sweep(sweep_name)) {
    if (existing->kind != "imported")
      throw std::runtime_error(
          fmt::format("sweep '{}' is a planned sweep; import into another sweep name", sweep_name));
    saved.sweep_id = existing->id;
  } else {
    sql::Statement insert(
        *conn_, "INSERT INTO sweeps(name, kind, config) VALUES(?1, 'imported', '') RETURNING id");
    insert.bind(1, sweep_name);
    saved.sweep_id = insert.returned_integer();
  }
  sql::Statement seen(
      *conn_,
      "SELECT source, label FROM observations WHERE sweep_id = ?1 AND row_hash = ?2 "
      "LIMIT 1");
  sql::Statement insert(*conn_,
                        "INSERT INTO observations(sweep_id, n_active, n_total, tokens, experts, "
                        "top_k, granularity, loss, label, source, row_hash, budget) "
                        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
  for (const ObservationRecord& o : rows) {
    const std::string hash = row_hash(o);
    seen.bind(1, saved.sweep_id).bind(2, hash);
    if (seen.step()) {
      if (!append)
        throw std::runtime_error(fmt::format(
            "{} is already in sweep '{}' (as {} of {}); nothing was imported. Importing the same "
            "rows twice would count them twice: pass --append to add them anyway, or import into "
            "another sweep",
            o.label, sweep_name, seen.text(1), seen.text(0)));
      ++saved.already_there;
    }
    seen.run();  // reset for the next row
    insert.bind(1, saved.sweep_id).bind(2, o.n_active).bind(3, o.n_total).bind(4, o.tokens);
    insert.bind(5, o.experts).bind(6, o.top_k).bind(7, o.granularity).bind(8, o.loss);
    insert.bind(9, o.label).bind(10, source).bind(11, hash).bind(12, o.budget);
    insert.run();
    ++saved.added;
  }
  tx.commit();
  return saved;
}

Database::SweepRemoved Database::remove_sweep(const std::string& name) {
  sql::Transaction tx(*conn_);
  const SweepRecord sw = sweep(name);
  SweepRemoved removed;
  auto count = [&](const char* table) {
    sql::Statement s(*conn_, fmt::format("SELECT count(*) FROM {} WHERE sweep_id = ?1", table));
    s.bind(1, sw.id);
    return s.step() ? static_cast<int>(s.integer(0)) : 0;
  };
  removed.runs = count("runs");
  removed.observations = count("observations");
  removed.fits = count("fits");
  sql::Statement(*conn_, "DELETE FROM sweeps WHERE id = ?1").bind(1, sw.id).run();
  tx.commit();
  return removed;
}

void Database::remove_fit(int64_t id) {
  sql::Transaction tx(*conn_);
  fit(id);  // a clear error for an unknown id
  sql::Statement(*conn_, "DELETE FROM fits WHERE id = ?1").bind(1, id).run();
  tx.commit();
}

std::vector<ObservationRecord> Database::observations(const std::string& sweep_name) const {
  const SweepRecord sw = sweep(sweep_name);
  std::vector<ObservationRecord> out;
  sql::Statement imported(*conn_,
                          "SELECT n_active, n_total, tokens, experts, top_k, granularity, loss, "
                          "label, budget FROM observations WHERE sweep_id = ?1 ORDER BY id");
  imported.bind(1, sw.id);
  while (imported.step())
    out.push_back({imported.real(0), imported.real(1), imported.real(2), imported.real(3),
                   imported.real(4), imported.real(5), imported.real(6), "", imported.text(7),
                   "imported", 0, imported.real(8)});
  std::set<std::string> sources;
  for (const RunRecord& r : runs(sweep_name, RunStatus::done)) {
    // A recipe-check neighbour trained off the sweep's recipe on purpose: not a point of the law.
    if (!r.final_loss || r.plan.spec.train.recipe_probe != 1) continue;
    const ModelShape& s = r.plan.spec.shape;
    out.push_back({static_cast<double>(r.plan.params.active),
                   static_cast<double>(r.plan.params.total),
                   static_cast<double>(r.plan.spec.tokens), static_cast<double>(s.experts),
                   static_cast<double>(s.top_k), 1.0, *r.final_loss, to_string(s.router), r.key,
                   r.source, r.steps_done, r.plan.budget});
    sources.insert(r.source);
  }
  if (sources.size() > 1)
    throw std::runtime_error(fmt::format(
        "sweep '{}' mixes trained and simulated runs, which no fit should mix; plan the config "
        "under another sweep name to simulate it, and keep this one for training",
        sweep_name));
  return out;
}

int64_t Database::save_fit(const std::string& sweep_name, const std::string& law,
                           const std::string& group, const std::string& result_json) {
  sql::Transaction tx(*conn_);
  const SweepRecord sw = sweep(sweep_name);
  sql::Statement insert(
      *conn_, "INSERT INTO fits(sweep_id, law, grp, result) VALUES(?1, ?2, ?3, ?4) RETURNING id");
  insert.bind(1, sw.id).bind(2, law).bind(3, group).bind(4, result_json);
  const int64_t id = insert.returned_integer();
  tx.commit();
  return id;
}

namespace {
FitRecord read_fit(const sql::Statement& s) {
  return {s.integer(0), s.integer(1), s.text(2), s.text(3), s.text(4), s.text(5), s.text(6)};
}
constexpr const char* kFitQuery =
    "SELECT f.id, f.sweep_id, s.name, f.law, f.grp, f.result, f.created_at FROM fits f "
    "JOIN sweeps s ON s.id = f.sweep_id ";
}  // namespace

FitRecord Database::fit(int64_t id) const {
  sql::Statement s(*conn_, fmt::format("{} WHERE f.id = ?1", kFitQuery));
  s.bind(1, id);
  if (!s.step())
    throw std::runtime_error(fmt::format(
        "no fit with id {} in {}; `moescale fit` prints the id of each fit", id, conn_->name()));
  return read_fit(s);
}

std::vector<FitRecord> Database::fits(const std::optional<std::string>& sweep_name) const {
  sql::Statement s(*conn_,
                   fmt::format("{} WHERE (?1 IS NULL OR s.name = ?1) ORDER BY f.id", kFitQuery));
  s.bind(1, sweep_name);
  std::vector<FitRecord> out;
  while (s.step()) out.push_back(read_fit(s));
  return out;
}

}  // namespace moescale

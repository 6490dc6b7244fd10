// Private to db/: a prepared statement with RAII and typed binding.
#pragma once

#include <fmt/format.h>
#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace moescale::sql {

[[noreturn]] inline void fail(sqlite3* db, const std::string& what) {
  throw std::runtime_error(fmt::format("database error while {}: {}", what, sqlite3_errmsg(db)));
}

class Statement {
 public:
  Statement(sqlite3* db, const char* text) : db_(db) {
    if (sqlite3_prepare_v2(db, text, -1, &stmt_, nullptr) != SQLITE_OK) fail(db_, "preparing");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, int64_t v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Statement& bind(int i, int v) { return bind(i, static_cast<int64_t>(v)); }
  Statement& bind(int i, double v) { return check(sqlite3_bind_double(stmt_, i, v)); }
  Statement& bind(int i, const std::string& v) {
    return check(
        sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  Statement& bind(int i, const char* v) { return bind(i, std::string(v)); }
  template <class T>
  Statement& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : check(sqlite3_bind_null(stmt_, i));
  }

  // True while there is a row to read.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, "executing a statement");
  }
  // Runs to completion and resets, so the statement can be bound again.
  void run() {
    while (step()) {
    }
    sqlite3_reset(stmt_);
  }

  int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  double real(int col) const { return sqlite3_column_double(stmt_, col); }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
  }
  std::optional<double> optional_real(int col) const {
    if (sqlite3_column_type(stmt_, col) == SQLITE_NULL) return std::nullopt;
    return real(col);
  }

 private:
  Statement& check(int rc) {
    if (rc != SQLITE_OK) fail(db_, "binding a value");
    return *this;
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

inline void exec(sqlite3* db, const char* text, const std::string& what) {
  char* message = nullptr;
  if (sqlite3_exec(db, text, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string m = message ? message : "unknown";
    sqlite3_free(message);
    throw std::runtime_error(fmt::format("database error while {}: {}", what, m));
  }
}

}  // namespace moescale::sql

// db copy: a whole store, row for row, between backends; and the text of a
// table's rows that shows two stores hold the same.
#include "db/db.h"
#include "db/statement.h"

namespace moescale {
namespace {

std::string column_list(const sql::Table& t) {
  std::string out;
  for (const sql::Column& c : t.columns) out += (out.empty() ? "" : ", ") + std::string(c.name);
  return out;
}

const sql::Table& find_table(const std::string& name) {
  for (const sql::Table& t : sql::tables())
    if (name == t.name) return t;
  throw std::invalid_argument(fmt::format("no table named '{}' in a moescale store", name));
}

// Binds column `col` of the current row of `from` as parameter col + 1 of `to`.
void copy_value(const sql::Statement& from, sql::Statement& to, int col, sql::Kind kind) {
  const int param = col + 1;
  switch (kind) {
    case sql::Kind::integer:
      to.bind(param, from.is_null(col) ? std::nullopt : std::optional<int64_t>(from.integer(col)));
      break;
    case sql::Kind::real:
      to.bind(param, from.is_null(col) ? std::nullopt : std::optional<double>(from.real(col)));
      break;
    case sql::Kind::text:
      to.bind(param, from.is_null(col) ? std::nullopt : std::optional<std::string>(from.text(col)));
      break;
  }
}

}  // namespace

int64_t Database::count_sweeps() const {
  sql::Statement s(*conn_, "SELECT count(*) FROM sweeps");
  return s.step() ? s.integer(0) : 0;
}

std::vector<std::pair<std::string, int64_t>> Database::copy_into(Database& destination) const {
  if (destination.count_sweeps() > 0)
    throw std::runtime_error(fmt::format(
        "{} already holds {} sweep(s); db copy only copies into an empty store (a new SQLite "
        "path or an empty PostgreSQL database), so that ids and the store identity stay those "
        "of {}",
        destination.display_name(), destination.count_sweeps(), display_name()));
  if (destination.store_identity() == store_identity())
    throw std::runtime_error(
        fmt::format("{} and {} are the same store", display_name(), destination.display_name()));
  sql::Transaction read(*conn_, sql::TransactionKind::snapshot_read);
  sql::Transaction write(*destination.conn_);
  // The destination's own (empty) store row gives way to the source's identity.
  sql::Statement(*destination.conn_, "DELETE FROM store").run();
  std::vector<std::pair<std::string, int64_t>> copied;
  for (const sql::Table& t : sql::tables()) {
    const std::string columns = column_list(t);
    sql::Statement select(
        *conn_, fmt::format("SELECT {} FROM {} ORDER BY {}", columns, t.name, t.order_by));
    std::string params;
    for (size_t i = 1; i <= t.columns.size(); ++i)
      params += fmt::format("{}?{}", i > 1 ? ", " : "", i);
    sql::Statement insert(*destination.conn_,
                          fmt::format("INSERT INTO {}({}) VALUES({})", t.name, columns, params));
    int64_t rows = 0;
    while (select.step()) {
      for (size_t c = 0; c < t.columns.size(); ++c)
        copy_value(select, insert, static_cast<int>(c), t.columns[c].kind);
      insert.run();
      ++rows;
    }
    if (t.has_id) destination.conn_->ids_inserted(t.name);
    copied.emplace_back(t.name, rows);
  }
  write.commit();
  read.commit();
  return copied;
}

std::vector<std::string> Database::table_names() {
  std::vector<std::string> out;
  for (const sql::Table& t : sql::tables()) out.emplace_back(t.name);
  return out;
}

std::vector<std::string> Database::table_rows(const std::string& table) const {
  const sql::Table& t = find_table(table);
  sql::Statement s(
      *conn_, fmt::format("SELECT {} FROM {} ORDER BY {}", column_list(t), t.name, t.order_by));
  std::vector<std::string> out;
  while (s.step()) {
    std::string row;
    for (size_t c = 0; c < t.columns.size(); ++c) {
      const int col = static_cast<int>(c);
      std::string value = "NULL";
      if (!s.is_null(col)) switch (t.columns[c].kind) {
          case sql::Kind::integer: value = std::to_string(s.integer(col)); break;
          case sql::Kind::real: value = fmt::format("{}", s.real(col)); break;
          case sql::Kind::text: value = fmt::format("'{}'", s.text(col)); break;
        }
      row += fmt::format("{}{}={}", c ? ", " : "", t.columns[c].name, value);
    }
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace moescale

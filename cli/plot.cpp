#include "cli/plot.h"

#include <fmt/format.h>

#include <fstream>
#include <stdexcept>

#include "cli/process.h"

namespace moescale::cli {
namespace {

// Colour-blind-safe (Okabe-Ito), then a few more.
const char* const kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                "#56B4E9", "#F0E442", "#000000", "#999999", "#882255"};

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return out + "\"";
}

std::string data_block(const std::string& name, const Series& s) {
  std::string out = fmt::format("${} << EOD\n", name);
  for (size_t i = 0; i < s.x.size(); ++i) {
    out += fmt::format("{:.9g} {:.9g}", s.x[i], s.y[i]);
    if (i < s.y_low.size()) out += fmt::format(" {:.9g} {:.9g}", s.y_low[i], s.y_high[i]);
    out += "\n";
  }
  return out + "EOD\n";
}

std::string plot_clause(const std::string& block, const Series& s) {
  const char* color = kPalette[s.color % std::size(kPalette)];
  const std::string title = s.title.empty() ? "notitle" : "title " + quote(s.title);
  if (s.style == "errorbars")
    return fmt::format("${} using 1:2:3:4 with yerrorbars lc rgb '{}' pt {} ps 1.2 {}", block,
                       color, s.point, title);
  if (s.style == "points")
    return fmt::format("${} using 1:2 with points lc rgb '{}' pt {} ps 1.3 {}", block, color,
                       s.point, title);
  if (s.style == "lines")
    return fmt::format("${} using 1:2 with lines lc rgb '{}' lw {} {}", block, color, s.width,
                       title);
  return fmt::format("${} using 1:2 with linespoints lc rgb '{}' lw {} pt {} ps 1.0 {}", block,
                     color, s.width, s.point, title);
}

std::string panel_script(const Panel& p, int panel_index) {
  std::string out;
  std::vector<std::string> clauses;
  for (size_t i = 0; i < p.series.size(); ++i) {
    if (p.series[i].x.empty()) continue;
    const std::string block = fmt::format("p{}s{}", panel_index, i);
    out += data_block(block, p.series[i]);
    clauses.push_back(plot_clause(block, p.series[i]));
  }
  out += fmt::format("set title {}\nset xlabel {}\nset ylabel {}\n", quote(p.title),
                     quote(p.xlabel), quote(p.ylabel));
  out += p.logx ? "set logscale x\nset format x '10^{%L}'\n" : "unset logscale x\nset format x\n";
  out += p.logy ? "set logscale y\n" : "unset logscale y\n";
  // gnuplot refuses `plot NaN` ("all points y value undefined"): an empty panel draws a
  // line outside fixed ranges instead.
  if (clauses.empty())
    return out +
           "unset logscale\nset format x\nset xrange [0:1]\nset yrange [0:1]\n"
           "set label 1 'no data' at graph 0.45, 0.5\nplot -1 notitle\n"
           "unset label 1\nset autoscale\n";
  out += "plot " + clauses.front();
  for (size_t i = 1; i < clauses.size(); ++i) out += ", \\\n     " + clauses[i];
  return out + "\n";
}

std::string script(const Figure& f, const std::string& terminal, const std::string& output) {
  const int rows = (static_cast<int>(f.panels.size()) + f.columns - 1) / f.columns;
  std::string out = fmt::format("set terminal {} size {},{} font 'DejaVu Sans,10'\n", terminal,
                                f.panel_width * f.columns, f.panel_height * rows);
  out += fmt::format("set output {}\n", quote(output));
  out += "set grid lc rgb '#dddddd'\nset key top right box opaque font ',9'\nset mxtics 10\n";
  out += fmt::format("set multiplot layout {},{} title {} font ',12'\n", rows, f.columns,
                     quote(f.title));
  for (size_t i = 0; i < f.panels.size(); ++i)
    out += panel_script(f.panels[i], static_cast<int>(i));
  return out + "unset multiplot\nset output\n";
}

}  // namespace

void render(const Figure& figure, const std::filesystem::path& dir) {
  for (auto [terminal, ext] : {std::pair{"pngcairo enhanced", "png"}, {"svg enhanced", "svg"}}) {
    const auto gp = dir / fmt::format("{}.{}.gp", figure.name, ext);
    const auto out = dir / fmt::format("{}.{}", figure.name, ext);
    std::ofstream(gp) << script(figure, terminal, out.filename().string());
    // gnuplot runs in DIR with the script's own name: no shell, so nothing in the
    // path the user gave is expanded or run.
    ProcessOptions in_dir;
    in_dir.working_dir = dir.string();
    const ProcessResult run = run_process({"gnuplot", gp.filename().string()}, in_dir);
    if (run.status != 0)
      throw std::runtime_error(
          fmt::format("gnuplot failed on {} (install gnuplot-nox; scripts/setup.sh does): {}",
                      gp.string(), (run.err + run.out).substr(0, 400)));
  }
}

}  // namespace moescale::cli

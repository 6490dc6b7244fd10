// Figures drawn by gnuplot (Debian's gnuplot-nox): each figure is written as a
// .gp script next to its .png and .svg, so users can restyle it.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace moescale::cli {

struct Series {
  Series() = default;
  Series(std::string title_, std::string style_, int color_, int point_ = 7)
      : title(std::move(title_)), style(std::move(style_)), color(color_), point(point_) {}

  std::string title;  // legend entry; empty: not in the legend
  std::vector<double> x, y;
  std::string style = "linespoints";  // lines, points, linespoints
  int color = 0;                      // index into the palette
  int point = 7;                      // gnuplot point type
  double width = 1.5;
  std::vector<double> y_low, y_high;  // with style "errorbars": the interval
};

struct Panel {
  std::string title, xlabel, ylabel;
  bool logx = false, logy = false;
  std::vector<Series> series;
};

struct Figure {
  std::string name;  // file stem
  std::string title;
  std::vector<Panel> panels;
  int columns = 1;
  int panel_width = 640, panel_height = 420;
};

// Writes DIR/NAME.gp, DIR/NAME.png and DIR/NAME.svg; throws if gnuplot fails.
void render(const Figure& figure, const std::filesystem::path& dir);

}  // namespace moescale::cli

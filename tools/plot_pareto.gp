# plot_pareto.gp — the Pareto fronts of a bloopcl-train CSV: train loss and test loss against
# the auxiliary loss (log prod_l ||W_l||_2^2) at the last epoch, one colour per method, the
# points of one method joined in lambda order.
#   gnuplot -e "csv='run.csv'; png='pareto.png'" tools/plot_pareto.gp
if (!exists("csv")) csv = "train.csv"
if (!exists("png")) png = "pareto.png"
set terminal pngcairo size 1400,600 noenhanced font ",11"
set output png
set datafile separator ","
# Rows of method m at the last epoch found in the file (two passes over it with awk).
rows(m) = sprintf("< awk -F, 'NR==FNR { if (FNR > 1 && $4 + 0 > e) e = $4 + 0; next } " . \
                  "$1 == \"%s\" && $4 + 0 == e' '%s' '%s'", m, csv, csv)
methods = "bloop mixed pcgrad dynamic_barrier"
colours = "#d62728 #1f77b4 #2ca02c #9467bd"
set grid
set key top right
set xlabel "aux loss: log prod ||W_l||_2^2"
set multiplot layout 1,2 title "bloopcl-train: Fashion-MNIST MLP, ".csv
set ylabel "train loss (cross-entropy)"
plot for [i=1:4] rows(word(methods, i)) using 8:5 with linespoints pt 7 ps 1.2 \
     lc rgb word(colours, i) title word(methods, i)
set ylabel "test loss (cross-entropy)"
plot for [i=1:4] rows(word(methods, i)) using 8:6 with linespoints pt 7 ps 1.2 \
     lc rgb word(colours, i) title word(methods, i)
unset multiplot

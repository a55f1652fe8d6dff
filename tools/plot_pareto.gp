# plot_pareto.gp — the Pareto fronts of a bloopcl-train CSV: train loss and test loss against
# the auxiliary loss (log prod_l ||W_l||_2^2) at the last epoch, one colour per method, the
# points of one method joined in lambda order. With several seeds (--seeds) each point is the
# mean over the seeds of its (method, lambda, EMA weight), with error bars of one standard
# deviation in both losses; with one seed the bars have length 0.
#   gnuplot -e "csv='run.csv'; png='pareto.png'" tools/plot_pareto.gp
if (!exists("csv")) csv = "train.csv"
if (!exists("png")) png = "pareto.png"
set terminal pngcairo size 1400,600 noenhanced font ",11"
set output png
set datafile separator whitespace
# Per (lambda, EMA weight) of method m at the last epoch found in the file, in the file's
# order: aux mean, train mean, aux sd, train sd, test mean, test sd (two passes with awk).
mean_sd = "function sd(s, q, c) { return c > 1 && q > s * s / c ? sqrt((q - s * s / c) / (c - 1)) : 0 } " . \
          "NR == FNR { if (FNR > 1 && $4 + 0 > e) e = $4 + 0; next } " . \
          "$1 == m && $4 + 0 == e { k = $2 \",\" $3; if (!(k in n)) order[++K] = k; n[k]++; " . \
          "a[k] += $8; aa[k] += $8 * $8; t[k] += $5; tt[k] += $5 * $5; v[k] += $6; vv[k] += $6 * $6 } " . \
          "END { for (i = 1; i <= K; i++) { k = order[i]; c = n[k]; " . \
          "print a[k] / c, t[k] / c, sd(a[k], aa[k], c), sd(t[k], tt[k], c), v[k] / c, sd(v[k], vv[k], c) } }"
rows(m) = sprintf("< awk -F, -v m='%s' '%s' '%s' '%s'", m, mean_sd, csv, csv)
# The methods the file holds, in its order (a method it lacks would be an empty, warned-of
# plot), each in its fixed colour.
methods = system(sprintf("awk -F, 'NR > 1 && !seen[$1]++ { printf \"%s \", $1 }' '%s'", "%s", csv))
colour(m) = m eq "bloop" ? "#d62728" : m eq "bloop-noema" ? "#ff9896" : m eq "mixed" ? "#1f77b4" : \
            m eq "pcgrad" ? "#2ca02c" : m eq "dynamic_barrier" ? "#9467bd" : "#8c564b"
set grid
set key top right
set xlabel "aux loss: log prod ||W_l||_2^2"
set multiplot layout 1,2 title "bloopcl-train: Fashion-MNIST MLP, ".csv." (mean +- sd over seeds)"
set ylabel "train loss (cross-entropy)"
plot for [i=1:words(methods)] rows(word(methods, i)) using 1:2:3:4 with xyerrorlines \
     pt 7 ps 1.0 lc rgb colour(word(methods, i)) title word(methods, i)
set ylabel "test loss (cross-entropy)"
plot for [i=1:words(methods)] rows(word(methods, i)) using 1:5:3:6 with xyerrorlines \
     pt 7 ps 1.0 lc rgb colour(word(methods, i)) title word(methods, i)
unset multiplot

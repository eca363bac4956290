# The summary plot of benches/all.sh: each figure's progress to its goal
# (value/goal for "at least", goal/value for "at most"; 1 = goal met;
# green bars met theirs).
set terminal pngcairo size 1200,600 font "DejaVu Sans,10" noenhanced
set output "benches/out/summary.png"
set title "walpipe throughput figures against the goals of issue 26 (bash benches/all.sh; single-run benches: median of 3 rounds)"
set style fill solid 0.8 border -1
set boxwidth 0.6
set yrange [0:*]
set ylabel "progress to goal (1 = met; higher is better)"
set xtics rotate by -30 left
set grid ytics
set key off
set bmargin 13
set rmargin 22
plot "benches/out/summary.dat" using 1:3:4:xtic(2) with boxes lc rgb variable, \
     1 with lines lw 2 dt 2 lc rgb "#c0392b", \
     "benches/out/summary.dat" using 1:3:(sprintf("%.2f", $3)) with labels offset 0,0.8

# wharfd RSS and staged bytes over time in the backlog scenario (bench/run.sh backlog).
# Usage: gnuplot -e "csv='docs/benchmarks/backlog.csv'; png='docs/benchmarks/backlog.png'" \
#          bench/plot_backlog.gp
# CSV columns: run,seconds,phase,rss_mib,staged_bytes,backlog_records,store_bytes
set terminal pngcairo size 1000,560 noenhanced
set output png
set datafile separator ","
set key top left
set grid
set title "Backlog: destination paused at full ingest, then resumed (each run)"
set xlabel "seconds since the load started"
set ylabel "wharfd RSS (MiB)"
set y2label "staged (MiB)"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
stats csv using 1 skip 1 nooutput
runs = int(STATS_max)
plot for [r=1:runs] csv skip 1 using 2:($1 == r ? $4 : NaN) with lines lw 2 \
       title sprintf("RSS, run %d", r), \
     for [r=1:runs] csv skip 1 using 2:($1 == r ? $5 / 1048576 : NaN) axes x1y2 \
       with lines dt 2 title sprintf("staged, run %d", r), \
     256 with lines lc rgb "red" dt 3 title "256 MiB target"

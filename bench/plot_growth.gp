# Ingest throughput and wharfd CPU per record per window as the store grows
# (bench/run.sh growth).
# Usage: gnuplot -e "csv='docs/benchmarks/growth.csv'; png='docs/benchmarks/growth.png'" \
#          bench/plot_growth.gp
# CSV columns: run,window,records_stored,records_per_s,cpu_us_per_record,rss_mib,store_bytes
set terminal pngcairo size 1000,560 noenhanced
set output png
set datafile separator ","
set key bottom left
set grid
set title "Growth: throughput per window as the store fills (destination paused)"
set xlabel "records in the store (millions)"
set ylabel "ingest records/s"
set y2label "wharfd CPU per record (us)"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
stats csv using 1 skip 1 nooutput
runs = int(STATS_max)
plot for [r=1:runs] csv skip 1 using ($3 / 1e6):($1 == r ? $4 : NaN) with linespoints lw 2 \
       title sprintf("records/s, run %d", r), \
     for [r=1:runs] csv skip 1 using ($3 / 1e6):($1 == r ? $5 : NaN) axes x1y2 \
       with lines dt 2 title sprintf("CPU us/record, run %d", r)

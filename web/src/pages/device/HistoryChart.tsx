import { useMemo } from "react";
// History with server-side downsampling (bucket=auto): average line in a min..max band.
import { Area, CartesianGrid, ComposedChart, Line, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { formatDateTime, timeAxis } from "../../api/time";
import { useChartTheme } from "../../theme";
import { formatReading } from "./LiveCharts";

export interface BandPoint {
  t: number;
  avg: number;
  range: [number, number];
}

type Bucket = { ts: string; avg: number; min: number; max: number };
type Raw = { ts: string; value: number };

export function toBand(points: (Bucket | Raw)[]): BandPoint[] {
  return points.map((p) =>
    "avg" in p
      ? { t: Date.parse(p.ts), avg: p.avg, range: [p.min, p.max] }
      : { t: Date.parse(p.ts), avg: p.value, range: [p.value, p.value] },
  );
}

/** At most `max` points: neighbours merge into one (mean of avg, min of min, max of max),
 * so the band keeps every extreme while the chart draws no more than the screen shows. */
export const MAX_DRAWN_POINTS = 1200;
export function decimate(data: BandPoint[], max = MAX_DRAWN_POINTS): BandPoint[] {
  if (data.length <= max) return data;
  const per = Math.ceil(data.length / max);
  const out: BandPoint[] = [];
  for (let i = 0; i < data.length; i += per) {
    const chunk = data.slice(i, i + per);
    let lo = Infinity;
    let hi = -Infinity;
    let sum = 0;
    for (const p of chunk) {
      lo = Math.min(lo, p.range[0]);
      hi = Math.max(hi, p.range[1]);
      sum += p.avg;
    }
    out.push({ t: chunk[0]!.t, avg: sum / chunk.length, range: [lo, hi] });
  }
  return out;
}

/** The time axis spans the chosen range [fromMs, toMs], whatever part of it has data. */
export function HistoryChart({
  data: all,
  name,
  unit = "",
  fromMs,
  toMs,
  height = 260,
}: {
  data: BandPoint[];
  name: string;
  unit?: string;
  fromMs: number;
  toMs: number;
  height?: number;
}) {
  const data = useMemo(() => decimate(all), [all]);
  const axis = useMemo(() => timeAxis(fromMs, toMs), [fromMs, toMs]);
  const chart = useChartTheme();
  return (
    <div
      style={{ height }}
      data-testid="history-chart"
      data-points={all.length}
      data-first-t={data[0]?.t ?? ""}
      data-from={fromMs}
      data-to={toMs}
      data-unit={unit}
    >
      <ResponsiveContainer width="100%" height="100%">
        <ComposedChart data={data} margin={{ top: 8, right: 16, bottom: 0, left: -8 }}>
          <CartesianGrid {...chart.grid} />
          <XAxis
            dataKey="t"
            type="number"
            scale="time"
            domain={[fromMs, toMs]}
            allowDataOverflow
            ticks={axis.ticks}
            tickFormatter={axis.format}
            {...chart.axis}
          />
          <YAxis
            domain={["auto", "auto"]}
            width={76}
            tickFormatter={(v: number) => `${Number(v.toPrecision(4))}${unit ? ` ${unit}` : ""}`}
            {...chart.axis}
          />
          <Tooltip
            labelFormatter={(t) => formatDateTime(Number(t))}
            formatter={(v: unknown) =>
              Array.isArray(v) ? v.map((x) => formatReading(Number(x), unit)).join(" – ") : formatReading(Number(v), unit)
            }
            {...chart.tooltip}
          />
          <Area dataKey="range" name={`${name} min–max`} stroke="none" fill={chart.line} fillOpacity={0.2} isAnimationActive={false} />
          <Line dataKey="avg" name={`${name} avg`} stroke={chart.line} dot={false} isAnimationActive={false} strokeWidth={2} />
        </ComposedChart>
      </ResponsiveContainer>
    </div>
  );
}

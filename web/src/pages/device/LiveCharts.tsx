// Live charts: one per metric, fed by device_data events over the shared WebSocket.
import { useEffect, useRef, useState } from "react";
import { Card, Col, Empty, Row, Statistic } from "antd";
import { CartesianGrid, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { useChartTheme } from "../../theme";
import { useLiveEvents } from "../../hooks/useLive";
import type { DataPayload } from "../../live/socket";
import { formatClock } from "../../api/time";

export const LIVE_WINDOW_S = 300;
export const LIVE_MAX_POINTS = 300;
export const LIVE_RENDER_MS = 1000;

export interface LivePoint {
  t: number; // epoch ms
  v: number;
}
export type LiveSeries = Record<string, LivePoint[]>;

/** Append one sample to the per-metric buffers, keeping a bounded window. */
export function appendSample(series: LiveSeries, tsSeconds: number, metrics: Record<string, number>): LiveSeries {
  const t = tsSeconds * 1000;
  const cutoff = t - LIVE_WINDOW_S * 1000;
  const next: LiveSeries = { ...series };
  for (const [name, v] of Object.entries(metrics)) {
    const points = (next[name] ?? []).filter((p) => p.t >= cutoff);
    points.push({ t, v });
    next[name] = points.length > LIVE_MAX_POINTS ? points.slice(-LIVE_MAX_POINTS) : points;
  }
  return next;
}

/** A reading as the device reported it (no padding to two decimals), at most two. */
export function formatReading(v: number, unit?: string): string {
  const text = String(Number(v.toFixed(2)));
  return unit ? `${text} ${unit}` : text;
}

export function LiveCharts({
  deviceId,
  seed,
  units = {},
  onSample,
}: {
  deviceId: string;
  seed: LiveSeries;
  /** metric -> unit (the device's declared units over the known defaults) */
  units?: Record<string, string>;
  onSample?: (metrics: Record<string, number>, ts: number) => void;
}) {
  const buffer = useRef<LiveSeries>(seed);
  const [series, setSeries] = useState<LiveSeries>(seed);
  useEffect(() => {
    buffer.current = seed;
    setSeries(seed);
  }, [seed]);
  useLiveEvents(["device_data"], [deviceId], (event) => {
    const { metrics } = event.payload as unknown as DataPayload;
    buffer.current = appendSample(buffer.current, event.ts, metrics);
    onSample?.(metrics, event.ts);
  });
  useEffect(() => {
    const timer = setInterval(() => {
      if (buffer.current !== series) setSeries(buffer.current);
    }, LIVE_RENDER_MS);
    return () => clearInterval(timer);
  }, [series]);

  const chart = useChartTheme();
  const names = Object.keys(series).sort();
  if (!names.length) {
    return <Empty description="No data in the last 5 minutes. Charts start with the next reading." />;
  }
  return (
    <Row gutter={[16, 16]}>
      {names.map((name) => {
        const points = series[name]!;
        const last = points[points.length - 1];
        const unit = units[name];
        return (
          <Col xs={24} md={12} xl={8} key={name}>
            <Card size="small" data-testid={`live-chart-${name}`} data-points={points.length} data-last-t={last?.t ?? ""}>
              <Statistic
                title={name}
                value={last ? formatReading(last.v) : "—"}
                suffix={last && unit ? unit : undefined}
                data-testid={`live-value-${name}`}
              />
              <div style={{ height: 140 }}>
                <ResponsiveContainer width="100%" height="100%">
                  <LineChart data={points} margin={{ top: 8, right: 8, bottom: 0, left: -16 }}>
                    <CartesianGrid {...chart.grid} />
                    <XAxis
                      dataKey="t"
                      type="number"
                      domain={["dataMin", "dataMax"]}
                      tickFormatter={(t: number) => formatClock(t)}
                      minTickGap={40}
                      {...chart.axis}
                    />
                    <YAxis
                      domain={["auto", "auto"]}
                      width={76}
                      tickFormatter={(v: number) => `${Number(v.toPrecision(4))}${unit ? ` ${unit}` : ""}`}
                      {...chart.axis}
                    />
                    <Tooltip
                      labelFormatter={(t) => formatClock(Number(t))}
                      formatter={(v: unknown) => formatReading(Number(v), unit)}
                      {...chart.tooltip}
                    />
                    <Line type="monotone" dataKey="v" name={name} stroke={chart.line} dot={false} isAnimationActive={false} strokeWidth={2} />
                  </LineChart>
                </ResponsiveContainer>
              </div>
            </Card>
          </Col>
        );
      })}
    </Row>
  );
}

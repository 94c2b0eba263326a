// Messages stored per second and devices online over the last hour or day, from the
// samples the maintenance leader records (GET /api/stats/history).
import { useEffect, useMemo, useState } from "react";
import { Card, Col, Empty, Row, Segmented } from "antd";
import { Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { api, unwrap, type components } from "../../api/client";
import { formatDateTime, timeAxis } from "../../api/time";

type Window = "1h" | "24h";
type Point = components["schemas"]["StatsPoint"];
const WINDOW_MS: Record<Window, number> = { "1h": 3600_000, "24h": 86400_000 };
export const HISTORY_POLL_MS = 60_000;

export default function StatsHistory() {
  const [window, setWindow] = useState<Window>("1h");
  const [points, setPoints] = useState<Point[] | null>(null);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    let stopped = false;
    const load = () =>
      unwrap(api.GET("/api/stats/history", { params: { query: { window } } }), { quiet: true })
        .then((h) => {
          if (stopped) return;
          setPoints(h.points);
          setNow(Date.now());
        })
        .catch(() => undefined);
    void load();
    const timer = setInterval(load, HISTORY_POLL_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [window]);
  const data = useMemo(
    () => (points ?? []).map((p) => ({ t: Date.parse(p.ts), rate: p.messages_per_second, online: p.devices_online })),
    [points],
  );
  const from = now - WINDOW_MS[window];
  const axis = useMemo(() => timeAxis(from, now), [from, now]);
  const chart = (key: "rate" | "online", name: string, color: string) => (
    <div style={{ height: 180 }} data-testid={`history-${key}`} data-points={data.length}>
      <ResponsiveContainer width="100%" height="100%">
        <LineChart data={data} margin={{ top: 8, right: 16, bottom: 0, left: -8 }}>
          <XAxis dataKey="t" type="number" scale="time" domain={[from, now]} allowDataOverflow ticks={axis.ticks} tickFormatter={axis.format} tick={{ fontSize: 11 }} />
          <YAxis tick={{ fontSize: 11 }} width={48} allowDecimals={key === "rate"} />
          <Tooltip labelFormatter={(t) => formatDateTime(Number(t))} />
          <Line dataKey={key} name={name} stroke={color} dot={false} isAnimationActive={false} connectNulls={false} />
        </LineChart>
      </ResponsiveContainer>
    </div>
  );
  return (
    <Card
      title="Over time"
      style={{ marginTop: 16 }}
      data-testid="stats-history"
      extra={<Segmented aria-label="Chart window" value={window} onChange={(v) => setWindow(v as Window)} options={["1h", "24h"]} />}
    >
      {points && points.length === 0 ? (
        <Empty description="No samples yet: the platform records one a minute." />
      ) : (
        <Row gutter={16}>
          <Col xs={24} md={12}>
            <div>Messages / s</div>
            {chart("rate", "messages/s", "#1668dc")}
          </Col>
          <Col xs={24} md={12}>
            <div>Devices online</div>
            {chart("online", "online", "#3f8600")}
          </Col>
        </Row>
      )}
    </Card>
  );
}

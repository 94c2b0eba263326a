import { lazy, Suspense, useEffect, useRef, useState } from "react";
import { Alert, Badge, Card, Col, List, Row, Skeleton, Space, Statistic, Tag, Typography } from "antd";
import { Link } from "react-router-dom";
import { api, unwrap, type components } from "../../api/client";
import { describe, useActivity } from "../../live/activity";
import { RelativeTime } from "../../components/RelativeTime";
import { ConnectHelp } from "../../components/ConnectHelp";
import { useActiveAlerts } from "../../live/alerts";
import { SEVERITY_COLOR } from "../alerts/service";

// Recharts loads with the chart, after the figures.
const StatsHistory = lazy(() => import("./StatsHistory"));
// Links inside a sentence are underlined: in the dark theme the link blue and the text
// are too close in lightness to tell apart by colour alone (WCAG 1.4.1).
const LINK_IN_TEXT = { textDecoration: "underline" } as const;

type Stats = components["schemas"]["StatsPublic"];
type Health = components["schemas"]["HealthPublic"];

export const STATS_POLL_MS = 2000;
export const HEALTH_POLL_MS = 5000;

/** Messages per second from two samples of the received counter. */
export function rate(
  prev: { at: number; count: number } | null,
  next: { at: number; count: number },
): number | null {
  if (!prev || next.at <= prev.at || next.count < prev.count) return null;
  return ((next.count - prev.count) * 1000) / (next.at - prev.at);
}

function usePoll<T>(load: () => Promise<T>, ms: number): { data: T | null; error: string | null } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const ref = useRef(load);
  ref.current = load;
  useEffect(() => {
    let stopped = false;
    const tick = async () => {
      try {
        const value = await ref.current();
        if (!stopped) {
          setData(value);
          setError(null);
        }
      } catch (exc) {
        if (!stopped) setError(String(exc));
      }
    };
    void tick();
    const timer = setInterval(tick, ms);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [ms]);
  return { data, error };
}

export function OverviewPage() {
  const last = useRef<{ at: number; count: number } | null>(null);
  const [perSecond, setPerSecond] = useState<number | null>(null);
  const stats = usePoll<Stats>(async () => {
    const s = await unwrap(api.GET("/api/stats"), { quiet: true });
    const sample = { at: performance.now(), count: s.messages_received };
    setPerSecond(rate(last.current, sample));
    last.current = sample;
    return s;
  }, STATS_POLL_MS);
  const health = usePoll<Health>(async () => {
    // 503 still carries the health report.
    const { data, error } = await api.GET("/api/health");
    return (data ?? (error as Health | undefined)) as Health;
  }, HEALTH_POLL_MS);
  const activity = useActivity();
  const s = stats.data;

  return (
    <div>
      <Typography.Title level={2}>Overview</Typography.Title>
      {stats.error && !s && <Alert type="error" showIcon message="Cannot load statistics" description={stats.error} />}
      {!s && !stats.error && <Skeleton active />}
      {s && (
        <>
          <Row gutter={[16, 16]}>
            <Col xs={12} md={6}>
              <Card>
                <Statistic title="Devices" value={s.devices_total} data-testid="stat-total" />
              </Card>
            </Col>
            <Col xs={12} md={6}>
              <Card>
                <Statistic title="Online" value={s.devices_online} valueStyle={{ color: "#3f8600" }} />
              </Card>
            </Col>
            <Col xs={12} md={6}>
              <Card>
                <Statistic title="Offline" value={s.devices_offline} />
              </Card>
            </Col>
            <Col xs={12} md={6}>
              <Card>
                <Statistic
                  title="Messages / s"
                  value={perSecond ?? s.ingest_rate}
                  precision={1}
                  data-testid="stat-rate"
                />
              </Card>
            </Col>
            <Col xs={12} md={6}>
              <Card>
                <Statistic title="Rejected messages" value={s.messages_rejected} />
                {Object.entries(s.rejected_by_reason).map(([reason, n]) => (
                  <Tag key={reason}>
                    {reason}: {n}
                  </Tag>
                ))}
              </Card>
            </Col>
            <Col xs={12} md={6}>
              <Card>
                <Statistic title="Stored messages" value={s.messages_stored} />
              </Card>
            </Col>
            <Col xs={12} md={6}>
              <AlertsTile />
            </Col>
            <Col xs={12} md={6}>
              <Card title="Health" size="small" data-testid="health">
                {health.data ? (
                  <>
                    <div>
                      <Badge status={health.data.database === "ok" ? "success" : "error"} text={`database ${health.data.database}`} />
                    </div>
                    <div>
                      <Badge status={health.data.mqtt === "ok" ? "success" : "error"} text={`broker ${health.data.mqtt}`} />
                    </div>
                    <div>
                      <Typography.Text type="secondary">
                        {health.data.workers} worker(s), {s.api_instances} API, {s.websocket_clients} live client(s)
                      </Typography.Text>
                    </div>
                  </>
                ) : (
                  <Badge status="default" text={health.error ? "unreachable" : "checking"} />
                )}
              </Card>
            </Col>
          </Row>
          {s.devices_total === 0 && (
            <div style={{ marginTop: 16 }}>
              <ConnectHelp />
            </div>
          )}
        </>
      )}
      <Suspense fallback={<Skeleton active style={{ marginTop: 16 }} />}>
        <StatsHistory />
      </Suspense>
      <Card title="Recent activity" style={{ marginTop: 16 }} data-testid="activity">
        <List
          size="small"
          dataSource={activity}
          locale={{ emptyText: "Nothing yet: device events, commands and alerts appear here." }}
          renderItem={(e) => (
            <List.Item data-key={e.key}>
              {e.device_id && (
                <Link to={`/devices/${encodeURIComponent(e.device_id)}`} style={LINK_IN_TEXT}>
                  {e.device_id}
                </Link>
              )}{" "}
              {e.type === "alert" ? (
                <Link to="/alerts" style={LINK_IN_TEXT}>
                  {describe(e)}
                </Link>
              ) : (
                describe(e)
              )}{" "}
              <Typography.Text type="secondary">
                <RelativeTime iso={e.ts} />
              </Typography.Text>
            </List.Item>
          )}
        />
      </Card>
    </div>
  );
}

const SEVERITIES = ["critical", "warning", "info"];

/** Active alerts by severity, each a link to the alerts it counts. */
function AlertsTile() {
  const alerts = useActiveAlerts();
  return (
    <Card data-testid="alerts-tile">
      <Statistic title={<Link to="/alerts">Active alerts</Link>} value={alerts ? alerts.total : "…"} />
      <Space size={4} wrap>
        {SEVERITIES.filter((s) => alerts?.bySeverity[s]).map((s) => (
          <Link key={s} to={`/alerts?severity=${s}`}>
            <Tag color={SEVERITY_COLOR[s]}>
              {alerts?.bySeverity[s]} {s}
            </Tag>
          </Link>
        ))}
        {alerts && alerts.total === 0 && <Typography.Text type="secondary">none</Typography.Text>}
      </Space>
    </Card>
  );
}

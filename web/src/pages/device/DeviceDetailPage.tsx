import { useCallback, useEffect, useMemo, useState } from "react";
import { Link, useParams } from "react-router-dom";
import {
  Alert,
  Badge,
  Button,
  Card,
  DatePicker,
  Descriptions,
  Empty,
  List,
  Result,
  Segmented,
  Select,
  Skeleton,
  Space,
  Table,
  Tag,
  Tabs,
  Typography,
} from "antd";
import { DownloadOutlined } from "@ant-design/icons";
import dayjs, { type Dayjs } from "dayjs";
import { api, authFetch, unwrap } from "../../api/client";
import { canControl } from "../../api/auth";
import { ApiError, detailOf, reportApiError } from "../../api/errors";
import { useUser } from "../../hooks/useAuth";
import { useLiveEvents } from "../../hooks/useLive";
import { useUrlState } from "../../hooks/useUrlState";
import type { Device } from "../../live/devices";
import { StatusBadge } from "../../components/StatusBadge";
import { RelativeTime } from "../../components/RelativeTime";
import { LiveCharts, LIVE_WINDOW_S, type LiveSeries } from "./LiveCharts";
import { HistoryChart, toBand, type BandPoint } from "./HistoryChart";
import { CommandStatus, ControlPanel } from "./ControlPanel";
import { useCommands } from "./useCommands";
import {
  csvUrl,
  events as loadEvents,
  getShadow,
  history as loadHistory,
  RANGES,
  type DeviceEvent,
  type RangeKey,
  type Shadow,
  type Telemetry,
} from "./service";
import { eventIso, formatDateTime } from "../../api/time";
import { describeEvent } from "./events";

export default function DeviceDetailPage() {
  const { id = "" } = useParams();
  const [device, setDevice] = useState<Device | null>(null);
  const [notFound, setNotFound] = useState(false);
  const user = useUser();

  useEffect(() => {
    setDevice(null);
    setNotFound(false);
    unwrap(api.GET("/api/devices/{device_id}", { params: { path: { device_id: id } } }), {
      quiet: (e) => e.status === 404,
    })
      .then(setDevice)
      .catch((e) => e instanceof ApiError && e.status === 404 && setNotFound(true));
  }, [id]);

  useLiveEvents(["device_status", "device_state", "device_updated", "device_data"], [id], (event) => {
    const iso = eventIso(event);
    setDevice((d) => {
      if (!d) return d;
      if (event.type === "device_status") {
        const status = (event.payload as { status: Device["status"] }).status;
        return { ...d, status, status_changed_at: iso };
      }
      if (event.type === "device_state") return { ...d, reported_state: event.payload, last_seen: iso };
      if (event.type === "device_data") return d.status === "online" ? { ...d, last_seen: iso } : { ...d, status: "online", last_seen: iso };
      if (event.type === "device_updated") {
        const p = event.payload as { firmware?: string; capabilities?: string[]; capabilities_known?: boolean; type?: string };
        return {
          ...d,
          firmware_version: p.firmware ?? d.firmware_version,
          capabilities: p.capabilities ?? d.capabilities,
          // An info says nothing of it (it describes the device); learned capabilities say false.
          capabilities_known: p.capabilities_known ?? (d.capabilities_known || p.capabilities !== undefined || p.firmware !== undefined),
          type: p.type ?? d.type,
        };
      }
      return d;
    });
  });

  const commands = useCommands(id);
  const [url, setUrl] = useUrlState({ tab: "live" });

  if (notFound) {
    return <Result status="404" title="No such device" subTitle={id} extra={<Link to="/devices">All devices</Link>} />;
  }
  if (!device) return <Skeleton active />;

  const control = canControl(user);
  return (
    <div>
      <Space wrap align="center" style={{ marginBottom: 8 }}>
        <Typography.Title level={2} style={{ margin: 0 }} data-testid="device-name">
          {device.name}
        </Typography.Title>
        <StatusBadge status={device.status} />
        <Typography.Text type="secondary">{device.id}</Typography.Text>
      </Space>
      <Descriptions size="small" column={{ xs: 1, sm: 2, lg: 4 }} style={{ marginBottom: 16 }}>
        <Descriptions.Item label="Last seen">
          <RelativeTime iso={device.last_seen} />
        </Descriptions.Item>
        <Descriptions.Item label="Type">{device.type ?? "—"}</Descriptions.Item>
        <Descriptions.Item label="Firmware">{device.firmware_version ?? "—"}</Descriptions.Item>
        <Descriptions.Item label="IP / RSSI">
          {device.ip ?? "—"} {device.rssi !== null ? `(${device.rssi} dBm)` : ""}
        </Descriptions.Item>
        <Descriptions.Item label="Capabilities">
          {device.capabilities_known ? null : (
            <Tag color="orange" data-testid="capabilities-unknown">
              capabilities unknown
            </Tag>
          )}
          <Space size={[0, 4]} wrap>
            {device.capabilities.map((c) => (
              <Tag key={c}>{c}</Tag>
            ))}
          </Space>
        </Descriptions.Item>
        <Descriptions.Item label="Tags">
          <Space size={[0, 4]} wrap>
            {device.tags.map((t) => (
              <Tag color="blue" key={t}>
                {t}
              </Tag>
            ))}
          </Space>
        </Descriptions.Item>
        <Descriptions.Item label="Shadow">
          <ShadowIndicator deviceId={id} reported={device.reported_state} />
        </Descriptions.Item>
        <Descriptions.Item label="OTA">
          {foreignFirmware(device.metadata) ? (
            <Typography.Text type="secondary" data-testid="ota-not-applicable">
              not applicable: runs {foreignFirmware(device.metadata)} firmware, which updates itself
            </Typography.Text>
          ) : (
            <OtaStatus commands={commands.commands} progress={commands.progress} />
          )}
        </Descriptions.Item>
      </Descriptions>
      <Tabs
        activeKey={url.tab}
        onChange={(tab) => setUrl({ tab })}
        items={[
          { key: "live", label: "Live", children: <LiveTab deviceId={id} units={device.units} /> },
          { key: "history", label: "History", children: <HistoryTab deviceId={id} /> },
          ...(control
            ? [
                {
                  key: "control",
                  label: "Control",
                  children: (
                    <ControlPanel
                      capabilities={device.capabilities}
                      capabilitiesKnown={device.capabilities_known}
                      reported={device.reported_state}
                      availability={commands.availability}
                      commands={commands.commands}
                      send={commands.send}
                      deviceStatus={device.status}
                    />
                  ),
                },
              ]
            : []),
          {
            key: "commands",
            label: "Commands",
            children: <CommandHistory {...commands} />,
          },
          { key: "events", label: "Events", children: <EventsList deviceId={id} /> },
        ]}
      />
    </div>
  );
}

function LiveTab({ deviceId, units }: { deviceId: string; units: Record<string, string> }) {
  const [seed, setSeed] = useState<LiveSeries | null>(null);
  useEffect(() => {
    const until = Date.now() / 1000;
    unwrap(
      api.GET("/api/devices/{device_id}/telemetry", {
        params: { path: { device_id: deviceId }, query: { since: String(until - LIVE_WINDOW_S), until: String(until + 5) } },
      }),
    )
      .then((body) => {
        const t = body as Telemetry;
        const s: LiveSeries = {};
        for (const [name, points] of Object.entries(t.series)) {
          s[name] = (points as { ts: string; value: number }[]).map((p) => ({ t: Date.parse(p.ts), v: p.value }));
        }
        setSeed(s);
      })
      .catch(() => setSeed({}));
  }, [deviceId]);
  if (!seed) return <Skeleton active />;
  return <LiveCharts deviceId={deviceId} seed={seed} units={units} />;
}

function HistoryTab({ deviceId }: { deviceId: string }) {
  // Range, custom bounds (epoch ms) and metric in the URL: a link shows the same chart.
  const [url, setUrl] = useUrlState({ range: "1h", from: "", to: "", metric: "" });
  const range = (url.range in RANGES || url.range === "custom" ? url.range : "1h") as RangeKey;
  const custom = useMemo<[Dayjs, Dayjs] | null>(
    () => (url.from && url.to ? [dayjs(Number(url.from)), dayjs(Number(url.to))] : null),
    [url.from, url.to],
  );
  const setRange = (r: RangeKey) => setUrl({ range: r });
  const setCustom = (v: [Dayjs, Dayjs] | null) => setUrl({ from: v ? String(v[0].valueOf()) : null, to: v ? String(v[1].valueOf()) : null });
  const [data, setData] = useState<Record<string, BandPoint[]> | null>(null);
  const [units, setUnits] = useState<Record<string, string>>({});
  const metric = url.metric || null;
  const setMetric = useCallback(
    (next: string | null | ((m: string | null) => string | null)) =>
      setUrl({ metric: typeof next === "function" ? next(url.metric || null) : next }),
    [setUrl, url.metric],
  );
  const [bounds, setBounds] = useState<[number, number] | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(() => {
    let since: number;
    let until: number;
    if (range === "custom") {
      // Nothing is shown (or downloaded) until both dates are chosen.
      setBounds(null);
      setData(null);
      setError(null);
      if (!custom) return;
      since = custom[0].valueOf() / 1000;
      until = custom[1].valueOf() / 1000;
    } else {
      until = Math.ceil(Date.now() / 1000);
      since = until - RANGES[range];
    }
    setBounds([since, until]);
    setData(null);
    loadHistory(deviceId, since, until)
      .then((t) => {
        const out: Record<string, BandPoint[]> = {};
        for (const [name, points] of Object.entries(t.series)) out[name] = toBand(points);
        setUnits(t.units ?? {});
        setData(out);
        setError(null);
        setMetric((m) => (m && m in out ? m : (Object.keys(out).sort()[0] ?? null)));
      })
      .catch((e) => setError(String(e)));
  }, [deviceId, range, custom]);
  useEffect(load, [load]);

  const names = useMemo(() => Object.keys(data ?? {}).sort(), [data]);
  return (
    <Card size="small">
      <Space wrap style={{ marginBottom: 12 }}>
        <Segmented
          aria-label="History range"
          data-testid="range"
          value={range}
          onChange={(v) => setRange(v as RangeKey)}
          options={["1h", "24h", "7d", "30d", "custom"]}
        />
        {range === "custom" && (
          <DatePicker.RangePicker
            showTime
            value={custom}
            onChange={(v) => setCustom(v && v[0] && v[1] ? [v[0], v[1]] : null)}
          />
        )}
        <Select
          aria-label="Metric"
          style={{ minWidth: 140 }}
          value={metric}
          onChange={setMetric}
          options={names.map((n) => ({ value: n, label: units[n] ? `${n} (${units[n]})` : n }))}
        />
        {bounds && <CsvButton deviceId={deviceId} since={bounds[0]} until={bounds[1]} />}
      </Space>
      {error && <Alert type="error" message={error} />}
      {!bounds && !error && <Alert type="info" showIcon message="Choose a start and an end to see this range." data-testid="custom-empty" />}
      {bounds && !data && !error && <Skeleton active />}
      {data && metric && bounds && (
        <HistoryChart data={data[metric] ?? []} name={metric} unit={units[metric]} fromMs={bounds[0] * 1000} toMs={bounds[1] * 1000} />
      )}
      {data && !metric && <Empty description="No data in this range" />}
    </Card>
  );
}

function CsvButton({ deviceId, since, until }: { deviceId: string; since: number; until: number }) {
  const [busy, setBusy] = useState(false);
  // Through the authenticated fetch (token, refresh on 401); a failed request shows its
  // reason and saves nothing.
  async function download() {
    setBusy(true);
    try {
      const request = new Request(new URL(csvUrl(deviceId, since, until), window.location.origin));
      const response = await authFetch(request);
      if (!response.ok) {
        const body: unknown = await response.json().catch(() => null);
        const path = new URL(request.url).pathname;
        reportApiError(new ApiError(response.status, detailOf(body, response.statusText), path));
        return;
      }
      const blob = await response.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `${deviceId}.csv`;
      a.click();
      URL.revokeObjectURL(a.href);
    } catch (exc) {
      reportApiError(new ApiError(0, `cannot reach the platform: ${String(exc)}`, ""));
    } finally {
      setBusy(false);
    }
  }
  return (
    <Button icon={<DownloadOutlined />} loading={busy} data-testid="csv" onClick={() => void download()}>
      CSV
    </Button>
  );
}

function ShadowIndicator({ deviceId, reported }: { deviceId: string; reported: unknown }) {
  const [shadow, setShadow] = useState<Shadow | null | undefined>(undefined);
  useEffect(() => {
    void getShadow(deviceId).then(setShadow);
  }, [deviceId, reported]);
  if (shadow === undefined) return <Badge status="default" text="…" />;
  if (shadow === null) return <Typography.Text type="secondary">not available</Typography.Text>;
  return shadow.in_sync ? (
    <Badge status="success" text="in sync" data-testid="shadow" />
  ) : (
    <Badge status="warning" text={`pending: ${Object.keys(shadow.delta).join(", ")}`} data-testid="shadow" />
  );
}

function OtaStatus({
  commands,
  progress,
}: {
  commands: ReturnType<typeof useCommands>["commands"];
  progress: Record<string, { stage?: string; percent?: number }>;
}) {
  const ota = commands.find((c) => c.command === "ota");
  if (!ota) return <Typography.Text type="secondary">no update</Typography.Text>;
  const p = progress[ota.id] ?? (ota.progress as { stage?: string; percent?: number } | null) ?? undefined;
  return (
    <span>
      {String(ota.params.version ?? "")} <CommandStatus status={ota.status} />
      {p && ota.status === "sent" ? `${p.stage ?? ""} ${p.percent ?? ""}%` : ""}
    </span>
  );
}

// Who sent a command (commands.source).
const SOURCE_LABEL: Record<string, string> = {
  user: "user",
  api: "API key",
  bulk: "bulk (user)",
  rule: "rule",
  shadow: "desired state",
  rollout: "rollout",
};

function CommandHistory({ commands, availability }: ReturnType<typeof useCommands>) {
  if (availability === "missing") {
    return <Empty description="Command history is not available on this server yet." />;
  }
  return (
    <Table
      size="small"
      rowKey="id"
      data-testid="command-history"
      dataSource={commands}
      pagination={{ pageSize: 20, hideOnSinglePage: true }}
      scroll={{ x: 600 }}
      locale={{ emptyText: "No commands sent yet." }}
      columns={[
        { title: "When", dataIndex: "created_at", render: (t: string) => <RelativeTime iso={t} /> },
        { title: "Command", dataIndex: "command" },
        { title: "Source", dataIndex: "source", render: (s: string) => <Tag>{SOURCE_LABEL[s] ?? s}</Tag> },
        { title: "Params", dataIndex: "params", render: (p: unknown) => <code>{JSON.stringify(p)}</code> },
        { title: "Status", dataIndex: "status", render: (s: string) => <CommandStatus status={s} /> },
        {
          title: "Result",
          key: "result",
          render: (_, c) => (c.error ? <Typography.Text type="danger">{c.error}</Typography.Text> : <code>{c.result ? JSON.stringify(c.result) : ""}</code>),
        },
      ]}
    />
  );
}

function EventsList({ deviceId }: { deviceId: string }) {
  const [items, setItems] = useState<DeviceEvent[] | null>(null);
  useEffect(() => {
    loadEvents(deviceId).then(setItems).catch(() => setItems([]));
  }, [deviceId]);
  useLiveEvents(["device_status", "device_event"], [deviceId], (e) => {
    const item: DeviceEvent = {
      id: -Date.now(),
      device_id: e.device_id,
      ts: eventIso(e),
      type: e.type,
      data: e.payload,
    };
    setItems((list) => [item, ...(list ?? [])].slice(0, 200));
  });
  if (!items) return <Skeleton active />;
  return (
    <List
      size="small"
      data-testid="events"
      dataSource={items}
      locale={{ emptyText: "No events yet." }}
      renderItem={(e) => {
        const text = describeEvent(e.type, e.data);
        return (
          <List.Item data-testid="event">
            <Space wrap>
              <Typography.Text type="secondary" style={{ minWidth: 150, display: "inline-block" }}>
                {formatDateTime(e.ts)}
              </Typography.Text>
              {/* orange and gold tags fail WCAG contrast in the light theme: the word says it */}
              <Tag color={text.level === "critical" ? "red" : undefined}>{text.level}</Tag>
              <span>{text.title}</span>
              {text.details.map(([k, v]) => (
                <Typography.Text key={k} type="secondary" style={{ overflowWrap: "anywhere" }}>
                  {k}: {v}
                </Typography.Text>
              ))}
              <RelativeTime iso={e.ts} />
            </Space>
          </List.Item>
        );
      }}
    />
  );
}

// A device mapped from foreign firmware (Tasmota, Zigbee2MQTT, Shelly: the adapters)
// carries its mapping in its metadata; the platform's OTA bundles are not for it.
function foreignFirmware(metadata: Record<string, unknown>): string | null {
  const adapter = metadata.adapter as { mapping?: unknown } | undefined;
  return adapter && typeof adapter.mapping === "string" ? adapter.mapping : null;
}

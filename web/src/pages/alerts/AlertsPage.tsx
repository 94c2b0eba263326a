import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Badge, Button, Card, Popconfirm, Select, Space, Table, Tag, Timeline, Typography } from "antd";
import { Link } from "react-router-dom";
import { useUser } from "../../hooks/useAuth";
import { canControl } from "../../api/auth";
import { useLiveEvents } from "../../hooks/useLive";
import type { LiveEvent } from "../../live/socket";
import { RelativeTime } from "../../components/RelativeTime";
import { useUrlState } from "../../hooks/useUrlState";
import { deviceLabel, useDevices } from "../../live/devices";
import {
  OPEN,
  SEVERITY_COLOR,
  STATUS_COLOR,
  acknowledgeAlert,
  applyAlertEvent,
  clearAlert,
  listAlerts,
  type Alert,
  type AlertFilters,
} from "./service";
import { formatDateTime } from "../../api/time";

const ALL_DEVICES = ["*"];

export default function AlertsPage() {
  const control = canControl(useUser());
  // Filters in the URL (lists comma-separated): a link shows the same alerts.
  const [url, setUrl] = useUrlState({ status: OPEN.join(","), severity: "", device: "" });
  const filters = useMemo<AlertFilters>(
    () => ({
      status: (url.status ? url.status.split(",") : []) as AlertFilters["status"],
      severity: (url.severity ? url.severity.split(",") : []) as AlertFilters["severity"],
      device_id: url.device,
    }),
    [url.status, url.severity, url.device],
  );
  const { rows: devices } = useDevices();
  const names = useMemo(() => new Map(devices.map((d) => [d.id, d.name])), [devices]);
  const [alerts, setAlerts] = useState<Alert[] | null>(null);
  const [open, setOpen] = useState<Record<string, number>>({});

  // Events that arrive while a load is in flight are applied again to what it returns:
  // the load may have read the database just before them.
  const loading = useRef(new Set<LiveEvent[]>());
  const refresh = useCallback(async () => {
    const seen: LiveEvent[] = [];
    loading.current.add(seen);
    const list = await listAlerts(filters).catch(() => null);
    loading.current.delete(seen);
    setAlerts(seen.reduce((l, e) => applyAlertEvent(l, e, filters), list?.data ?? []));
    if (list) setOpen(list.open);
  }, [filters]);
  useEffect(() => {
    void refresh();
  }, [refresh]);

  // Live: raised / acknowledged / cleared anywhere shows up here at once; loaded again
  // once the subscription is live (and after a reconnect), so nothing raised in between
  // is missed.
  useLiveEvents(
    ["alert"],
    ALL_DEVICES,
    (event) => {
      for (const seen of loading.current) seen.push(event);
      setAlerts((list) => applyAlertEvent(list ?? [], event, filters));
      const action = (event.payload as { action?: string }).action;
      if (action === "raised" || action === "cleared") {
        void listAlerts({ ...filters, status: OPEN }, 1)
          .then((l) => setOpen(l.open))
          .catch(() => undefined);
      }
    },
    true,
    () => void refresh(),
  );

  async function act(alert: Alert, what: "acknowledge" | "clear") {
    const updated = await (what === "acknowledge" ? acknowledgeAlert(alert.id) : clearAlert(alert.id)).catch(() => null);
    if (updated) setAlerts((list) => applyAlertEvent(list ?? [], { type: "alert", device_id: "-", ts: 0, payload: { ...updated } }, filters));
  }

  return (
    <div>
      <Typography.Title level={2}>
        Alerts{" "}
        <Badge count={open.active ?? 0} title="active" />{" "}
        <Badge count={open.acknowledged ?? 0} color="gold" title="acknowledged" />
      </Typography.Title>
      <Card>
        <Space wrap style={{ marginBottom: 12 }}>
          <Select
            aria-label="Status"
            mode="multiple"
            allowClear
            placeholder="Any status"
            style={{ minWidth: 220 }}
            value={filters.status}
            onChange={(status: string[]) => setUrl({ status: status.join(",") })}
            options={["active", "acknowledged", "cleared"].map((v) => ({ value: v, label: v }))}
          />
          <Select
            aria-label="Severity"
            mode="multiple"
            allowClear
            placeholder="Any severity"
            style={{ minWidth: 200 }}
            value={filters.severity}
            onChange={(severity: string[]) => setUrl({ severity: severity.join(",") || null })}
            options={["critical", "warning", "info"].map((v) => ({ value: v, label: v }))}
          />
          <Select
            aria-label="Device"
            placeholder="Any device"
            allowClear
            showSearch
            optionFilterProp="label"
            style={{ minWidth: 200 }}
            value={filters.device_id || undefined}
            onChange={(device?: string) => setUrl({ device: device ?? null })}
            options={devices.map((d) => ({ value: d.id, label: deviceLabel(d) }))}
          />
        </Space>
        <Table
          size="small"
          rowKey="id"
          loading={alerts === null}
          dataSource={alerts ?? []}
          pagination={{ pageSize: 50, hideOnSinglePage: true }}
          locale={{ emptyText: "No alerts match." }}
          expandable={{ expandedRowRender: (a) => <History alert={a} />, rowExpandable: (a) => a.history.length > 0 }}
          columns={[
            { title: "Severity", dataIndex: "severity", width: 90, render: (s: string) => <Tag color={SEVERITY_COLOR[s]}>{s}</Tag> },
            { title: "Status", dataIndex: "status", width: 110, responsive: ["sm"], render: (s: string) => <Tag color={STATUS_COLOR[s]}>{s}</Tag> },
            { title: "Alert", dataIndex: "name", responsive: ["md"] },
            { title: "Message", dataIndex: "message" },
            {
              title: "Device",
              dataIndex: "device_id",
              responsive: ["sm"],
              render: (d: string | null) => (d ? <Link to={`/devices/${encodeURIComponent(d)}`}>{names.get(d) ?? d}</Link> : ""),
            },
            { title: "Raised", dataIndex: "raised_at", render: (t: string) => <RelativeTime iso={t} /> },
            {
              title: "By",
              key: "by",
              responsive: ["lg"],
              render: (_: unknown, a: Alert) => a.cleared_by ?? a.acknowledged_by ?? "",
            },
            ...(control
              ? [
                  {
                    title: "",
                    key: "actions",
                    render: (_: unknown, a: Alert) => (
                      <Space wrap size={4}>
                        {a.status === "active" && (
                          <Button size="small" onClick={() => act(a, "acknowledge")}>
                            Acknowledge
                          </Button>
                        )}
                        {a.status !== "cleared" && (
                          <Popconfirm title="Clear this alert?" onConfirm={() => act(a, "clear")}>
                            <Button size="small">Clear</Button>
                          </Popconfirm>
                        )}
                      </Space>
                    ),
                  },
                ]
              : []),
          ]}
        />
      </Card>
    </div>
  );
}

function History({ alert }: { alert: Alert }) {
  return (
    <Timeline
      items={alert.history.map((h) => {
        const item = h as { status?: string; ts?: string; by?: string | null; note?: string };
        return {
          color: STATUS_COLOR[item.status ?? ""] === "default" ? "gray" : STATUS_COLOR[item.status ?? ""],
          children: `${item.status ?? "?"}${item.ts ? ` ${formatDateTime(item.ts)}` : ""}${item.by ? ` by ${item.by}` : ""}${item.note ? `: ${item.note}` : ""}`,
        };
      })}
    />
  );
}

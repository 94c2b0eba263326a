import { useCallback, useEffect, useState } from "react";
import { Badge, Button, Card, Input, Popconfirm, Select, Space, Table, Tag, Timeline, Typography } from "antd";
import { Link } from "react-router-dom";
import { useUser } from "../../hooks/useAuth";
import { canControl } from "../../api/auth";
import { useLiveEvents } from "../../hooks/useLive";
import { RelativeTime } from "../../components/RelativeTime";
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
  const [filters, setFilters] = useState<AlertFilters>({ status: OPEN, severity: [], device_id: "" });
  const [alerts, setAlerts] = useState<Alert[] | null>(null);
  const [open, setOpen] = useState<Record<string, number>>({});

  const refresh = useCallback(async () => {
    const list = await listAlerts(filters).catch(() => null);
    setAlerts(list?.data ?? []);
    if (list) setOpen(list.open);
  }, [filters]);
  useEffect(() => {
    void refresh();
  }, [refresh]);

  // Live: raised / acknowledged / cleared anywhere shows up here at once.
  useLiveEvents(["alert"], ALL_DEVICES, (event) => {
    setAlerts((list) => applyAlertEvent(list ?? [], event, filters));
    const action = (event.payload as { action?: string }).action;
    if (action === "raised" || action === "cleared") {
      void listAlerts({ ...filters, status: OPEN }, 1)
        .then((l) => setOpen(l.open))
        .catch(() => undefined);
    }
  });

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
            onChange={(status) => setFilters((f) => ({ ...f, status }))}
            options={["active", "acknowledged", "cleared"].map((v) => ({ value: v, label: v }))}
          />
          <Select
            aria-label="Severity"
            mode="multiple"
            allowClear
            placeholder="Any severity"
            style={{ minWidth: 200 }}
            value={filters.severity}
            onChange={(severity) => setFilters((f) => ({ ...f, severity }))}
            options={["critical", "warning", "info"].map((v) => ({ value: v, label: v }))}
          />
          <Input.Search
            aria-label="Device"
            placeholder="Device id"
            allowClear
            onSearch={(device_id) => setFilters((f) => ({ ...f, device_id: device_id.trim() }))}
            style={{ width: 200 }}
          />
        </Space>
        <Table
          size="small"
          rowKey="id"
          loading={alerts === null}
          dataSource={alerts ?? []}
          pagination={{ pageSize: 50, hideOnSinglePage: true }}
          scroll={{ x: 700 }}
          locale={{ emptyText: "No alerts match." }}
          expandable={{ expandedRowRender: (a) => <History alert={a} />, rowExpandable: (a) => a.history.length > 0 }}
          columns={[
            { title: "Severity", dataIndex: "severity", width: 90, render: (s: string) => <Tag color={SEVERITY_COLOR[s]}>{s}</Tag> },
            { title: "Status", dataIndex: "status", width: 110, render: (s: string) => <Tag color={STATUS_COLOR[s]}>{s}</Tag> },
            { title: "Alert", dataIndex: "name" },
            { title: "Message", dataIndex: "message" },
            {
              title: "Device",
              dataIndex: "device_id",
              render: (d: string | null) => (d ? <Link to={`/devices/${encodeURIComponent(d)}`}>{d}</Link> : ""),
            },
            { title: "Raised", dataIndex: "raised_at", render: (t: string) => <RelativeTime iso={t} /> },
            {
              title: "By",
              key: "by",
              render: (_: unknown, a: Alert) => a.cleared_by ?? a.acknowledged_by ?? "",
            },
            ...(control
              ? [
                  {
                    title: "",
                    key: "actions",
                    render: (_: unknown, a: Alert) => (
                      <Space>
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

// One command to a selection of devices or a tagged group: checked before it is sent,
// one result per device that follows the command to its end (live, polled as a fallback).
import { useEffect, useMemo, useState } from "react";
import { Alert, Button, Form, Input, InputNumber, Modal, Radio, Select, Space, Table, Tag, Typography } from "antd";
import { SendOutlined } from "@ant-design/icons";
import { api, unwrap, type components } from "../../api/client";
import { ApiError } from "../../api/errors";
import { useLiveEvents } from "../../hooks/useLive";
import { useDevices } from "../../live/devices";
import { FINAL_STATES } from "../device/service";

type Bulk = components["schemas"]["BulkPublic"];
type Command = components["schemas"]["CommandPublic"];

export const BULK_POLL_MS = 2000;
const STATUS_COLOR: Record<string, string> = { acked: "green", failed: "red", timed_out: "red", expired: "orange", cancelled: "default" };

interface Row {
  device_id: string;
  command_id: string | null;
  status: string;
  error: string | null;
}

/** The custom command's JSON, or why it cannot be sent. */
export function parseCustom(text: string): { command: string; params: Record<string, unknown> } | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (exc) {
    return { error: `Not valid JSON: ${exc instanceof Error ? exc.message : String(exc)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { error: 'Write an object: {"command": "name", "params": {...}}' };
  const { command, params = {} } = value as { command?: unknown; params?: unknown };
  if (typeof command !== "string" || !command) return { error: 'Say which command: {"command": "name", ...}' };
  if (typeof params !== "object" || params === null || Array.isArray(params)) return { error: '"params" must be an object' };
  return { command, params: params as Record<string, unknown> };
}

export function BulkCommand({ ids }: { ids: string[] }) {
  const { rows: devices } = useDevices();
  const [open, setOpen] = useState(false);
  const [target, setTarget] = useState<"selected" | "tag">("selected");
  const [tag, setTag] = useState<string | null>(null);
  const [command, setCommand] = useState("ping");
  const [relay, setRelay] = useState<string | null>(null);
  const [state, setState] = useState("toggle");
  const [angle, setAngle] = useState<number | null>(90);
  const [custom, setCustom] = useState('{"command": "ping", "params": {}}');
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [results, setResults] = useState<Row[] | null>(null);

  const tags = useMemo(() => [...new Set(devices.flatMap((d) => d.tags))].sort(), [devices]);
  const targets = useMemo(
    () => (target === "selected" ? devices.filter((d) => ids.includes(d.id)) : devices.filter((d) => tag !== null && d.tags.includes(tag))),
    [devices, ids, target, tag],
  );
  // The relays the targeted devices declare (relay:light, relay:fan), not free text.
  const relays = useMemo(
    () => [...new Set(targets.flatMap((d) => d.capabilities.filter((c) => c.startsWith("relay:")).map((c) => c.slice(6))))].sort(),
    [targets],
  );
  useEffect(() => {
    if (relay === null || !relays.includes(relay)) setRelay(relays[0] ?? null);
  }, [relays, relay]);
  useEffect(() => setProblem(null), [command, custom, relay, target, tag]);

  const update = (c: Pick<Command, "id" | "status" | "error">) =>
    setResults((list) => list && list.map((r) => (r.command_id === c.id ? { ...r, status: c.status, error: c.error ?? r.error } : r)));
  useLiveEvents(
    ["command_update"],
    (results ?? []).map((r) => r.device_id),
    (event) => {
      const p = event.payload as { id?: string; status?: string; error?: string | null };
      if (p.id && p.status) update({ id: p.id, status: p.status as Command["status"], error: p.error ?? null });
    },
    results !== null,
  );
  // Fallback for a missed event: ask for the commands still open.
  const openIds = (results ?? []).filter((r) => r.command_id && !FINAL_STATES.has(r.status)).map((r) => r.command_id!);
  const openKey = openIds.join(",");
  useEffect(() => {
    if (!openKey) return undefined;
    const timer = setInterval(() => {
      for (const id of openKey.split(",")) {
        void unwrap(api.GET("/api/commands/{command_id}", { params: { path: { command_id: id } } }), { quiet: true })
          .then(update)
          .catch(() => undefined);
      }
    }, BULK_POLL_MS);
    return () => clearInterval(timer);
  }, [openKey]);

  function body(): { command: string; params: Record<string, unknown> } | string {
    if (target === "selected" && !ids.length) return "Select devices in the table first, or send to a tag.";
    if (target === "tag" && !tag) return "Choose a tag.";
    if (command === "relay") return relay ? { command, params: { name: relay, state } } : "None of these devices declares a relay.";
    if (command === "servo") return angle === null ? "Give an angle, 0 to 180." : { command, params: { angle } };
    if (command === "custom") {
      const parsed = parseCustom(custom);
      return "error" in parsed ? parsed.error : parsed;
    }
    return { command, params: {} };
  }

  async function run() {
    const b = body();
    if (typeof b === "string") {
      setProblem(b); // said in the form; nothing is sent
      return;
    }
    setBusy(true);
    try {
      const selector = target === "selected" ? { devices: ids } : { tags: [tag!] };
      const out: Bulk = await unwrap(api.POST("/api/commands/bulk", { body: { ...b, selector } }), { quiet: (e) => e.status === 422 });
      setResults(
        out.data.map((r) => ({
          device_id: r.device_id,
          command_id: r.command?.id ?? null,
          status: r.command?.status ?? "refused",
          error: r.error ?? r.command?.error ?? null,
        })),
      );
    } catch (exc) {
      setProblem(exc instanceof ApiError ? exc.detail : String(exc));
    } finally {
      setBusy(false); // the spinner always ends
    }
  }

  return (
    <>
      <Button
        icon={<SendOutlined />}
        onClick={() => {
          setResults(null);
          setProblem(null);
          setTarget(ids.length ? "selected" : "tag");
          setOpen(true);
        }}
      >
        Send command
      </Button>
      <Modal
        open={open}
        title={target === "selected" ? `Command to ${ids.length} device(s)` : `Command to devices tagged ${tag ?? "…"}`}
        okText="Send"
        confirmLoading={busy}
        onOk={run}
        onCancel={() => setOpen(false)}
      >
        <Form layout="vertical" component={false}>
          <Space direction="vertical" style={{ width: "100%" }}>
            <Radio.Group
              value={target}
              onChange={(e) => setTarget(e.target.value as "selected" | "tag")}
              optionType="button"
              options={[
                { value: "selected", label: `Selected (${ids.length})` },
                { value: "tag", label: "Devices with a tag" },
              ]}
            />
            {target === "tag" && (
              <Form.Item label="Tag" style={{ marginBottom: 0 }}>
                <Select aria-label="Tag" placeholder="Tag" style={{ width: "100%" }} value={tag} onChange={setTag} options={tags.map((t) => ({ value: t, label: t }))} />
              </Form.Item>
            )}
            <Form.Item label="Command" style={{ marginBottom: 0 }}>
              <Select
                aria-label="Command"
                style={{ width: "100%" }}
                value={command}
                onChange={setCommand}
                options={["ping", "reboot", "relay", "servo", "custom"].map((c) => ({ value: c, label: c }))}
              />
            </Form.Item>
            {command === "relay" && (
              <Space wrap>
                <Form.Item label="Relay" style={{ marginBottom: 0 }}>
                  <Select
                    aria-label="Relay name"
                    style={{ minWidth: 180 }}
                    value={relay}
                    onChange={setRelay}
                    notFoundContent="These devices declare no relay"
                    options={relays.map((r) => ({ value: r, label: r }))}
                  />
                </Form.Item>
                <Form.Item label="State" style={{ marginBottom: 0 }}>
                  <Select aria-label="Relay state" style={{ minWidth: 120 }} value={state} onChange={setState} options={["on", "off", "toggle"].map((s) => ({ value: s, label: s }))} />
                </Form.Item>
              </Space>
            )}
            {command === "servo" && (
              <Form.Item label="Angle" style={{ marginBottom: 0 }}>
                <InputNumber aria-label="Angle" min={0} max={180} value={angle} onChange={setAngle} suffix="°" />
              </Form.Item>
            )}
            {command === "custom" && (
              <Form.Item label={'{"command": "name", "params": {...}}'} style={{ marginBottom: 0 }}>
                <Input.TextArea aria-label="Custom command JSON" rows={4} value={custom} onChange={(e) => setCustom(e.target.value)} />
              </Form.Item>
            )}
            {problem && <Alert type="error" showIcon message={problem} data-testid="bulk-problem" />}
            {results && (
              <Table
                size="small"
                rowKey="device_id"
                pagination={false}
                scroll={{ y: 240 }}
                dataSource={results}
                data-testid="bulk-results"
                columns={[
                  { title: "Device", dataIndex: "device_id" },
                  {
                    title: "Status",
                    dataIndex: "status",
                    render: (s: string, r: Row) => (
                      <Space data-device={r.device_id}>
                        <Tag color={s === "refused" ? "red" : STATUS_COLOR[s]}>{s}</Tag>
                        {r.error && <Typography.Text type="secondary">{r.error}</Typography.Text>}
                      </Space>
                    ),
                  },
                ]}
              />
            )}
          </Space>
        </Form>
      </Modal>
    </>
  );
}

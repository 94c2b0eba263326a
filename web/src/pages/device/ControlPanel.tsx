// Controls built from the device's capabilities. Each control sends a command and
// shows the device's real acknowledgement (from the command's live status). A device
// whose capabilities are unknown (it never sent info) is offered the standard commands
// the server accepts for it: relay by name, servo, reboot.
import { useEffect, useState } from "react";
import { Alert, AutoComplete, Button, Card, Col, Form, Input, InputNumber, Popconfirm, Row, Select, Slider, Space, Switch, Tag, Typography, App } from "antd";
import { PoweroffOutlined, SendOutlined } from "@ant-design/icons";
import type { Command } from "./service";
import { FINAL_STATES } from "./service";

/** The note on a command to a device that never acknowledges: ``sent`` is all it gets. */
const NO_ACKS = "device does not acknowledge";

function unacknowledged(c: Command): boolean {
  return c.status === "sent" && c.notes.some((n) => n.note === NO_ACKS);
}
import type { Availability } from "./useCommands";
import { formatDateTime } from "../../api/time";

export interface Capabilities {
  relays: string[];
  servo: boolean;
  reboot: boolean;
  automation: boolean;
  ota: boolean;
  custom: string[];
}

export function parseCapabilities(caps: string[]): Capabilities {
  return {
    relays: caps.filter((c) => c.startsWith("relay:")).map((c) => c.slice(6)),
    servo: caps.includes("servo"),
    reboot: caps.includes("reboot"),
    automation: caps.includes("automation"),
    ota: caps.includes("ota"),
    custom: caps.filter((c) => c.startsWith("cmd:")).map((c) => c.slice(4)),
  };
}

type Send = (command: string, params?: Record<string, unknown>) => Promise<Command | null>;

const AUTOMATION_FIELDS: { name: string; label: string; kind: "time" | "number" }[] = [
  { name: "light_on", label: "Light on at", kind: "time" },
  { name: "light_off", label: "Light off at", kind: "time" },
  { name: "fan_temp_on", label: "Fan on above °C", kind: "number" },
  { name: "fan_temp_off", label: "Fan off below °C", kind: "number" },
  { name: "fan_hum_on", label: "Fan on above % RH", kind: "number" },
  { name: "fan_hum_off", label: "Fan off below % RH", kind: "number" },
  { name: "gas_alarm", label: "Gas alarm at", kind: "number" },
];

export function ControlPanel({
  capabilities,
  capabilitiesKnown = true,
  reported,
  availability,
  commands,
  send,
  deviceStatus,
}: {
  capabilities: string[];
  capabilitiesKnown?: boolean;
  reported: Record<string, unknown> | null;
  availability: Availability;
  commands: Command[];
  send: Send;
  /** the device's presence: an offline device's commands wait, and the panel says so */
  deviceStatus?: "online" | "offline" | "unknown";
}) {
  const caps = parseCapabilities(capabilities);
  const { message } = App.useApp();
  const [pending, setPending] = useState<Record<string, string>>({}); // control -> command id
  const relays = (reported?.relays ?? {}) as Record<string, boolean>;
  const reportedAngle = typeof reported?.servo === "number" ? reported.servo : 90;
  const [angle, setAngle] = useState<number>(reportedAngle);
  useEffect(() => setAngle(reportedAngle), [reportedAngle]);

  // Clear a control's busy state when its command finishes; tell the user how.
  useEffect(() => {
    for (const [control, id] of Object.entries(pending)) {
      const c = commands.find((x) => x.id === id);
      if (c && (FINAL_STATES.has(c.status) || unacknowledged(c))) {
        if (c.status === "acked") message.success(`${control}: acknowledged by the device`);
        else if (unacknowledged(c)) message.info(`${control}: sent (${NO_ACKS})`);
        else message.error(`${control}: ${c.status}${c.error ? ` (${c.error})` : ""}`);
        setPending(({ [control]: _, ...rest }) => rest);
      }
    }
  }, [commands, pending, message]);

  async function run(control: string, command: string, params: Record<string, unknown> = {}) {
    const created = await send(command, params);
    if (created && !FINAL_STATES.has(created.status) && !unacknowledged(created)) setPending((p) => ({ ...p, [control]: created.id }));
  }

  if (availability === "missing") {
    return (
      <Alert
        type="info"
        showIcon
        message="Device control is not available on this server yet"
        description="This platform version has no command API (POST /api/devices/{id}/commands). The controls appear when it does."
        data-testid="controls-missing"
      />
    );
  }
  const unknown = !capabilitiesKnown;
  const servo = caps.servo || unknown;
  const reboot = caps.reboot || unknown;
  const nothing = !caps.relays.length && !servo && !reboot && !caps.automation;
  // Commands sent while the device is away wait for it; a spinner alone would look stuck.
  const waiting =
    deviceStatus !== undefined && deviceStatus !== "online"
      ? Object.entries(pending)
          .map(([control, id]) => ({ control, command: commands.find((c) => c.id === id) }))
          .filter((w) => !w.command || !FINAL_STATES.has(w.command.status))
      : [];
  return (
    <Space direction="vertical" style={{ width: "100%" }} data-testid="control-panel">
      {waiting.length > 0 && (
        <Alert
          type="info"
          showIcon
          data-testid="command-waits"
          message={`The device is ${deviceStatus === "offline" ? "offline" : "not connected"}: ${waiting.map((w) => w.control).join(", ")} waits for it`}
          description={`The command is ${waiting[0]?.command?.status ?? "queued"} and goes out when the device connects again${waiting[0]?.command?.expires_at ? `, until ${formatDateTime(Date.parse(waiting[0].command.expires_at))} (then it expires)` : ""}. The switch stays busy until the device acknowledges.`}
        />
      )}
      {nothing && <Typography.Text type="secondary">This device reports no controllable capabilities; use a custom command.</Typography.Text>}
      {unknown && (
        <Alert
          type="warning"
          showIcon
          data-testid="generic-commands"
          message="Standard commands: this device has not said what it has"
          description={
            "It never sent its info, so these are the commands every device of the original design may take " +
            "(relay by name, servo, reboot, custom), not controls read from the device. " +
            "Relays and a servo it has reported are listed; whether it has the others only the device knows."
          }
        />
      )}
      <Row gutter={[16, 16]}>
        {unknown && (
          <Col xs={24} md={12}>
            <RelayByName known={caps.relays} busy={Object.keys(pending).some((k) => k.startsWith("relay "))} onSend={(name, state) => run(`relay ${name}`, "relay", { name, state })} />
          </Col>
        )}
        {caps.relays.length > 0 && (
          <Col xs={24} md={12}>
            <Card size="small" title="Relays">
              {caps.relays.map((name) => (
                <div key={name} style={{ display: "flex", justifyContent: "space-between", padding: "6px 0" }}>
                  <span id={`relay-${name}`}>{name}</span>
                  <Switch
                    aria-labelledby={`relay-${name}`}
                    data-testid={`relay-${name}`}
                    checked={Boolean(relays[name])}
                    loading={Boolean(pending[`relay ${name}`])}
                    onChange={(on) => run(`relay ${name}`, "relay", { name, state: on ? "on" : "off" })}
                  />
                </div>
              ))}
            </Card>
          </Col>
        )}
        {servo && (
          <Col xs={24} md={12}>
            <Card size="small" title={typeof reported?.servo === "number" || !unknown ? `Servo: ${reportedAngle}°` : "Servo (if it has one)"}>
              <Slider
                min={0}
                max={180}
                value={angle}
                onChange={setAngle}
                onChangeComplete={(v) => run("servo", "servo", { angle: v })}
                marks={{ 0: "0°", 90: "90°", 180: "180°" }}
                ariaLabelForHandle="Servo angle"
                data-testid="servo-slider"
              />
              <Space>
                <InputNumber aria-label="Servo angle value" min={0} max={180} value={angle} onChange={(v) => v !== null && setAngle(v)} />
                <Button loading={Boolean(pending.servo)} onClick={() => run("servo", "servo", { angle })}>
                  Set
                </Button>
              </Space>
            </Card>
          </Col>
        )}
        {caps.automation && (
          <Col xs={24} md={12}>
            <AutomationForm current={(reported?.automation ?? {}) as Record<string, unknown>} onSubmit={(p) => run("automation", "automation", p)} busy={Boolean(pending.automation)} />
          </Col>
        )}
        <Col xs={24} md={12}>
          <CustomCommand suggestions={unknown ? ["custom", ...caps.custom] : caps.custom} onSubmit={(c, p) => run(c, c, p)} />
          {reboot && (
            <Card size="small" title="Power" style={{ marginTop: 16 }}>
              <Popconfirm title="Reboot this device?" description="It goes offline for a few seconds." okText="Reboot" onConfirm={() => run("reboot", "reboot")}>
                <Button danger icon={<PoweroffOutlined />} loading={Boolean(pending.reboot)}>
                  Reboot
                </Button>
              </Popconfirm>
            </Card>
          )}
        </Col>
      </Row>
    </Space>
  );
}

/** Relay on/off by name, for a device that has not listed its relays. */
function RelayByName({ known, busy, onSend }: { known: string[]; busy: boolean; onSend: (name: string, state: "on" | "off") => void }) {
  const [name, setName] = useState(known[0] ?? "");
  const valid = /^[A-Za-z0-9_.-]{1,58}$/.test(name);
  return (
    <Card size="small" title="Relay by name">
      <Space direction="vertical" style={{ width: "100%" }}>
        <AutoComplete
          aria-label="Relay name"
          value={name}
          onChange={setName}
          options={known.map((r) => ({ value: r }))}
          filterOption={(input, option) => String(option?.value ?? "").toLowerCase().includes(input.toLowerCase())}
          placeholder="light"
          style={{ width: "100%" }}
        />
        <Space wrap>
          <Button disabled={!valid} loading={busy} onClick={() => onSend(name, "on")} data-testid="relay-by-name-on">
            Turn on
          </Button>
          <Button disabled={!valid} loading={busy} onClick={() => onSend(name, "off")} data-testid="relay-by-name-off">
            Turn off
          </Button>
        </Space>
      </Space>
    </Card>
  );
}

function AutomationForm({ current, onSubmit, busy }: { current: Record<string, unknown>; onSubmit: (p: Record<string, unknown>) => void; busy: boolean }) {
  const [form] = Form.useForm();
  useEffect(() => form.setFieldsValue(current), [current, form]);
  return (
    <Card size="small" title="Automation">
      <Form
        form={form}
        layout="vertical"
        size="small"
        onFinish={(values: Record<string, unknown>) =>
          onSubmit(Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined && v !== null && v !== "")))
        }
      >
        <Row gutter={8}>
          {AUTOMATION_FIELDS.map((f) => (
            <Col xs={12} key={f.name}>
              <Form.Item
                name={f.name}
                label={f.label}
                rules={f.kind === "time" ? [{ pattern: /^([01]\d|2[0-3]):[0-5]\d$/, message: "HH:MM" }] : []}
              >
                {f.kind === "time" ? <Input placeholder="HH:MM" /> : <InputNumber style={{ width: "100%" }} />}
              </Form.Item>
            </Col>
          ))}
        </Row>
        <Button htmlType="submit" type="primary" loading={busy}>
          Apply
        </Button>
      </Form>
    </Card>
  );
}

function CustomCommand({ suggestions, onSubmit }: { suggestions: string[]; onSubmit: (command: string, params: Record<string, unknown>) => void }) {
  const [command, setCommand] = useState("ping");
  const [params, setParams] = useState("{}");
  const [error, setError] = useState<string | null>(null);
  return (
    <Card size="small" title="Custom command">
      <Space direction="vertical" style={{ width: "100%" }}>
        <Select
          showSearch
          aria-label="Command name"
          value={command}
          onChange={setCommand}
          options={[...new Set(["ping", "set_config", ...suggestions])].map((c) => ({ value: c, label: c }))}
          style={{ width: "100%" }}
        />
        <Input.TextArea aria-label="Command parameters (JSON)" rows={3} value={params} onChange={(e) => setParams(e.target.value)} status={error ? "error" : undefined} />
        {error && <Typography.Text type="danger">{error}</Typography.Text>}
        <Button
          icon={<SendOutlined />}
          onClick={() => {
            try {
              const parsed: unknown = JSON.parse(params || "{}");
              if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("parameters must be a JSON object");
              setError(null);
              onSubmit(command, parsed as Record<string, unknown>);
            } catch (exc) {
              setError(exc instanceof Error ? exc.message : String(exc));
            }
          }}
        >
          Send
        </Button>
      </Space>
    </Card>
  );
}

export function CommandStatus({ status }: { status: string }) {
  const color: Record<string, string> = {
    queued: "default",
    sending: "processing",
    sent: "processing",
    acked: "success",
    failed: "error",
    timed_out: "warning",
    expired: "warning",
    cancelled: "default",
  };
  return <Tag color={color[status] ?? "default"}>{status}</Tag>;
}

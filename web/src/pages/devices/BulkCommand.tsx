import { useState } from "react";
import { Button, Input, InputNumber, Modal, Select, Space, Table, Typography } from "antd";
import { SendOutlined } from "@ant-design/icons";
import { sendCommand } from "../device/service";
import { mapLimited } from "./service";
import { ApiError } from "../../api/errors";

interface Result {
  id: string;
  ok: boolean;
  detail: string;
}

export function BulkCommand({ ids }: { ids: string[] }) {
  const [open, setOpen] = useState(false);
  const [command, setCommand] = useState("ping");
  const [relay, setRelay] = useState("light");
  const [state, setState] = useState("toggle");
  const [angle, setAngle] = useState<number | null>(90);
  const [custom, setCustom] = useState("{}");
  const [busy, setBusy] = useState(false);
  const [results, setResults] = useState<Result[] | null>(null);

  function params(): Record<string, unknown> {
    if (command === "relay") return { name: relay, state };
    if (command === "servo") return { angle };
    if (command === "custom") return JSON.parse(custom) as Record<string, unknown>;
    return {};
  }

  async function run() {
    setBusy(true);
    const p = params();
    const name = command === "custom" ? String(p.command ?? "custom") : command;
    const out = await mapLimited(ids, 8, (id) => sendCommand(id, name, (p.params as Record<string, unknown>) ?? p));
    setResults(
      out.map((r, i) => ({
        id: ids[i]!,
        ok: r.status === "fulfilled",
        detail:
          r.status === "fulfilled"
            ? r.value.status
            : r.reason instanceof ApiError && r.reason.routeMissing
              ? "commands are not available on this server yet"
              : String(r.reason instanceof Error ? r.reason.message : r.reason),
      })),
    );
    setBusy(false);
  }

  return (
    <>
      <Button icon={<SendOutlined />} onClick={() => { setResults(null); setOpen(true); }}>
        Send command
      </Button>
      <Modal
        open={open}
        title={`Command to ${ids.length} device(s)`}
        okText="Send"
        confirmLoading={busy}
        onOk={run}
        onCancel={() => setOpen(false)}
      >
        <Space direction="vertical" style={{ width: "100%" }}>
          <Select
            aria-label="Command"
            value={command}
            onChange={setCommand}
            options={["ping", "reboot", "relay", "servo", "custom"].map((c) => ({ value: c, label: c }))}
          />
          {command === "relay" && (
            <Space>
              <Input aria-label="Relay name" value={relay} onChange={(e) => setRelay(e.target.value)} />
              <Select aria-label="Relay state" value={state} onChange={setState} options={["on", "off", "toggle"].map((s) => ({ value: s, label: s }))} />
            </Space>
          )}
          {command === "servo" && <InputNumber aria-label="Angle" min={0} max={180} value={angle} onChange={setAngle} />}
          {command === "custom" && (
            <>
              <Typography.Text type="secondary">{'{"command": "name", "params": {...}}'}</Typography.Text>
              <Input.TextArea aria-label="Custom command JSON" rows={4} value={custom} onChange={(e) => setCustom(e.target.value)} />
            </>
          )}
          {results && (
            <Table
              size="small"
              rowKey="id"
              pagination={false}
              scroll={{ y: 240 }}
              dataSource={results}
              columns={[
                { title: "Device", dataIndex: "id" },
                { title: "Result", dataIndex: "detail", render: (d: string, r: Result) => <Typography.Text type={r.ok ? "success" : "danger"}>{d}</Typography.Text> },
              ]}
            />
          )}
        </Space>
      </Modal>
    </>
  );
}

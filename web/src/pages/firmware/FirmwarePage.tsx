import { useCallback, useEffect, useState } from "react";
import {
  App,
  Button,
  Card,
  Checkbox,
  Form,
  Input,
  InputNumber,
  Modal,
  Popconfirm,
  Progress,
  Radio,
  Result,
  Select,
  Skeleton,
  Space,
  Table,
  Tag,
  Typography,
  Upload,
} from "antd";
import { UploadOutlined } from "@ant-design/icons";
import { useUser } from "../../hooks/useAuth";
import { idList, useUrlState } from "../../hooks/useUrlState";
import { canControl, isAdmin } from "../../api/auth";
import { deviceLabel, useDevices } from "../../live/devices";
import { RelativeTime } from "../../components/RelativeTime";
import {
  deleteFirmware,
  getRollout,
  listFirmware,
  listRollouts,
  rolloutAction,
  readableReason,
  rolloutProgress,
  startRollout,
  uploadFirmware,
  type Firmware,
  type Rollout,
} from "./service";

export const ROLLOUT_POLL_MS = 2000;

export default function FirmwarePage() {
  const [firmware, setFirmware] = useState<Firmware[] | null | undefined>(undefined);
  const [rollouts, setRollouts] = useState<Rollout[]>([]);
  const [expanded, setExpanded] = useState<Record<number, Rollout>>({});
  // The rollouts opened to their devices, in the URL (`rollouts=3,5`): a link shows them.
  const [url, setUrl] = useUrlState({ rollouts: "" });
  const open = idList(url.rollouts);
  const openKey = url.rollouts;
  const user = useUser();
  const control = canControl(user);
  const admin = isAdmin(user);

  const refresh = useCallback(async () => {
    const list = await listFirmware().catch(() => undefined);
    setFirmware(list);
    if (list) setRollouts(await listRollouts().catch(() => []));
  }, []);
  useEffect(() => {
    void refresh();
  }, [refresh]);
  useEffect(() => {
    for (const id of idList(openKey)) void getRollout(id).then((full) => setExpanded((e) => ({ ...e, [id]: full })), () => undefined);
  }, [openKey]);
  // Live progress: poll while a rollout runs.
  useEffect(() => {
    if (!rollouts.some((r) => r.status === "running")) return undefined;
    const timer = setInterval(() => {
      void listRollouts().then(setRollouts).catch(() => undefined);
      for (const id of idList(openKey)) void getRollout(id).then((r) => setExpanded((e) => ({ ...e, [id]: r })));
    }, ROLLOUT_POLL_MS);
    return () => clearInterval(timer);
  }, [rollouts, openKey]);

  if (firmware === undefined) return <Skeleton active />;
  if (firmware === null) {
    return (
      <Result
        status="info"
        title="Firmware updates are not available on this server yet"
        subTitle="This platform version has no firmware API (POST /api/firmware, /api/rollouts). This page works as soon as it does."
        data-testid="firmware-missing"
      />
    );
  }
  return (
    <div>
      <Typography.Title level={2}>Firmware</Typography.Title>
      <Card title="Bundles" extra={control && <UploadForm onDone={refresh} />} style={{ marginBottom: 16 }}>
        <Table
          size="small"
          rowKey="id"
          dataSource={firmware}
          pagination={false}
          scroll={{ x: 600 }}
          locale={{ emptyText: "No firmware uploaded yet." }}
          columns={[
            { title: "Version", dataIndex: "version" },
            { title: "Size", dataIndex: "size", render: (s: number) => `${(s / 1024).toFixed(1)} KiB` },
            { title: "SHA-256", dataIndex: "sha256", render: (h: string) => <code title={h}>{h.slice(0, 12)}…</code> },
            { title: "Signed by", key: "key_id", render: (_: unknown, f: Firmware) => <SignedBy keyId={f.key_id} nextKeyId={f.next_key_id} /> },
            { title: "Notes", dataIndex: "notes" },
            { title: "Uploaded", dataIndex: "created_at", render: (t: string) => <RelativeTime iso={t} /> },
            ...(control
              ? [
                  {
                    title: "",
                    key: "actions",
                    render: (_: unknown, f: Firmware) => (
                      <Space>
                        <RolloutForm firmware={f} admin={admin} onDone={refresh} />
                        <Popconfirm title={`Delete ${f.version}?`} onConfirm={() => deleteFirmware(f.id).then(refresh)}>
                          <Button danger size="small">
                            Delete
                          </Button>
                        </Popconfirm>
                      </Space>
                    ),
                  },
                ]
              : []),
          ]}
        />
      </Card>
      <Card title="Rollouts">
        <Table
          size="small"
          rowKey="id"
          dataSource={rollouts}
          pagination={false}
          scroll={{ x: 600 }}
          locale={{ emptyText: "No rollouts yet." }}
          expandable={{
            expandedRowKeys: open,
            onExpand: (opened, r) =>
              setUrl({ rollouts: (opened ? [...open, r.id] : open.filter((id) => id !== r.id)).join(",") || null }),
            expandedRowRender: (r) => <RolloutDevices rollout={expanded[r.id]} />,
          }}
          columns={[
            { title: "Version", dataIndex: "version" },
            { title: "Signed by", key: "key_id", render: (_: unknown, r: Rollout) => <SignedBy keyId={r.key_id} /> },
            {
              title: "Status",
              dataIndex: "status",
              render: (s: string, r: Rollout) => (
                <span>
                  <Tag>{s}</Tag>
                  {r.paused_reason && (
                    <Typography.Text type="warning" title={r.paused_reason} data-testid="paused-reason">
                      {readableReason(r.paused_reason)}
                    </Typography.Text>
                  )}
                </span>
              ),
            },
            {
              title: "Progress",
              key: "progress",
              render: (_, r) => {
                const p = rolloutProgress(r.counts, r.devices_total);
                return (
                  <Progress
                    percent={p.total ? Math.round((p.done / p.total) * 100) : 0}
                    success={{ percent: p.total ? Math.round(((p.done - p.failed) / p.total) * 100) : 0 }}
                    status={p.failed ? "exception" : r.status === "running" ? "active" : "normal"}
                    format={() => `${p.done}/${p.total}`}
                    size="small"
                  />
                );
              },
            },
            { title: "Started", dataIndex: "created_at", render: (t: string) => <RelativeTime iso={t} /> },
            ...(control
              ? [
                  {
                    title: "",
                    key: "actions",
                    render: (_: unknown, r: Rollout) => (
                      <Space>
                        {r.status === "running" && <Button size="small" onClick={() => rolloutAction(r.id, "pause").then(refresh)}>Pause</Button>}
                        {r.status === "paused" && <Button size="small" onClick={() => rolloutAction(r.id, "resume").then(refresh)}>Resume</Button>}
                        {(r.status === "running" || r.status === "paused") && (
                          <Popconfirm title="Cancel this rollout?" onConfirm={() => rolloutAction(r.id, "cancel").then(refresh)}>
                            <Button size="small" danger>
                              Cancel
                            </Button>
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

/** Which key signed a bundle: devices install only bundles signed with the key they were flashed with. */
export function SignedBy({ keyId, nextKeyId }: { keyId: string | null; nextKeyId?: string | null }) {
  if (!keyId) {
    return (
      <Tag color="red" data-testid="unsigned">
        unsigned
      </Tag>
    );
  }
  return (
    <span>
      <Tag color="green" title="id of the Ed25519 key that signed this bundle">
        key <code>{keyId}</code>
      </Tag>
      {nextKeyId && (
        <Typography.Text type="secondary">
          rotates to key <code>{nextKeyId}</code>
        </Typography.Text>
      )}
    </span>
  );
}

function RolloutDevices({ rollout }: { rollout: Rollout | undefined }) {
  if (!rollout) return <Skeleton active />;
  return (
    <Table
      size="small"
      rowKey="device_id"
      dataSource={rollout.devices ?? []}
      pagination={{ pageSize: 20, hideOnSinglePage: true }}
      columns={[
        { title: "Device", dataIndex: "device_id" },
        { title: "Status", dataIndex: "status", render: (s: string) => <Tag>{s}</Tag> },
        { title: "Stage", dataIndex: "stage" },
        { title: "From", dataIndex: "from_version" },
        {
          title: "Error",
          dataIndex: "error",
          render: (e: string | null) => (
            <span title={e ?? undefined} data-testid="rollout-device-error">
              {readableReason(e)}
            </span>
          ),
        },
      ]}
    />
  );
}

function UploadForm({ onDone }: { onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [file, setFile] = useState<File | null>(null);
  const [fileMissing, setFileMissing] = useState(false);
  const [busy, setBusy] = useState(false);
  const [form] = Form.useForm<{ version?: string; notes: string }>();
  return (
    <>
      <Button type="primary" icon={<UploadOutlined />} onClick={() => setOpen(true)}>
        Upload
      </Button>
      <Modal
        open={open}
        title="Upload firmware bundle"
        okText="Upload"
        confirmLoading={busy}
        onCancel={() => setOpen(false)}
        onOk={() => form.submit()}
      >
        <Form
          form={form}
          layout="vertical"
          onFinish={async (v) => {
            if (!file) {
              setFileMissing(true); // said under the field, not a silent no-op
              return;
            }
            setBusy(true);
            try {
              await uploadFirmware(file, v.version || undefined, v.notes ?? "");
              setOpen(false);
              form.resetFields();
              setFile(null);
              onDone();
            } catch {
              /* reported centrally */
            } finally {
              setBusy(false);
            }
          }}
        >
          <Form.Item
            label="Bundle"
            required
            validateStatus={fileMissing ? "error" : undefined}
            help={fileMissing ? <span data-testid="upload-problem">Choose a bundle file first (made with iotp firmware sign).</span> : undefined}
          >
            <Upload
              beforeUpload={(f) => {
                setFile(f);
                setFileMissing(false);
                return false;
              }}
              maxCount={1}
              onRemove={() => setFile(null)}
            >
              <Button icon={<UploadOutlined />}>Choose file</Button>
            </Upload>
          </Form.Item>
          <Form.Item name="version" label="Version" extra="Optional: the bundle names its version; if given, it must match.">
            <Input placeholder="1.2.0" />
          </Form.Item>
          <Form.Item name="notes" label="Notes">
            <Input.TextArea rows={2} />
          </Form.Item>
        </Form>
      </Modal>
    </>
  );
}

function RolloutForm({ firmware, admin, onDone }: { firmware: Firmware; admin: boolean; onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const { rows } = useDevices();
  const { message, modal } = App.useApp();
  const [form] = Form.useForm();
  const target = Form.useWatch("target", form) as string | undefined;
  const types = [...new Set(rows.map((d) => d.type).filter(Boolean))] as string[];
  const tags = [...new Set(rows.flatMap((d) => d.tags))];
  return (
    <>
      <Button size="small" onClick={() => setOpen(true)}>
        Roll out
      </Button>
      <Modal open={open} title={`Roll out ${firmware.version}`} okText="Start" onCancel={() => setOpen(false)} onOk={() => form.submit()}>
        <Form
          form={form}
          layout="vertical"
          initialValues={{ target: "devices", rate_per_minute: 10, failure_percent: 20 }}
          onFinish={async (v: Record<string, unknown>) => {
            const who =
              v.target === "devices"
                ? `${(v.device_ids as string[]).length} device(s)`
                : v.target === "type"
                  ? `every device of type ${String(v.device_type)}`
                  : v.target === "tag"
                    ? `every device tagged ${String(v.tag)}`
                    : "every device";
            // Devices install and reboot: nothing starts without a second yes.
            const sure = await modal.confirm({
              title: `Start rolling out ${firmware.version}?`,
              content: `${who} will download ${firmware.version}, install it and reboot, ${String(v.rate_per_minute)} per minute. The rollout pauses when ${String(v.failure_percent)}% of its devices fail.`,
              okText: "Start rollout",
              cancelText: "Back",
            });
            if (!sure) return;
            try {
              await startRollout({
                firmware_id: firmware.id,
                rate_per_minute: v.rate_per_minute as number,
                failure_threshold: (v.failure_percent as number) / 100,
                allow_downgrade: Boolean(v.allow_downgrade),
                allow_unsigned: Boolean(v.allow_unsigned),
                selector: {
                  ...(v.target === "devices" ? { devices: v.device_ids as string[] } : {}),
                  ...(v.target === "type" ? { type: v.device_type as string } : {}),
                  ...(v.target === "tag" ? { tags: [v.tag as string] } : {}),
                  all: v.target === "all",
                },
              });
              message.success("Rollout started");
              setOpen(false);
              onDone();
            } catch {
              /* reported centrally */
            }
          }}
        >
          <Form.Item name="target" label="Target">
            <Radio.Group options={["devices", "type", "tag", "all"]} optionType="button" />
          </Form.Item>
          {target === "devices" && (
            <Form.Item name="device_ids" label="Devices" rules={[{ required: true }]}>
              <Select mode="multiple" options={rows.map((d) => ({ value: d.id, label: deviceLabel(d) }))} optionFilterProp="label" />
            </Form.Item>
          )}
          {target === "type" && (
            <Form.Item name="device_type" label="Device type" rules={[{ required: true }]}>
              <Select options={types.map((t) => ({ value: t, label: t }))} />
            </Form.Item>
          )}
          {target === "tag" && (
            <Form.Item name="tag" label="Tag" rules={[{ required: true }]}>
              <Select options={tags.map((t) => ({ value: t, label: t }))} />
            </Form.Item>
          )}
          <Form.Item name="rate_per_minute" label="Devices per minute">
            <InputNumber min={1} />
          </Form.Item>
          <Form.Item
            name="failure_percent"
            label="Pause when this share of its devices fails"
            extra="The rollout stops sending updates once this percentage of its target devices has failed or rolled back; you then resume or cancel it."
          >
            <InputNumber min={0} max={100} step={5} suffix="%" aria-label="Failure threshold in percent" />
          </Form.Item>
          <Form.Item name="allow_downgrade" valuePropName="checked" extra="Devices refuse a version older than the one they run unless this is set.">
            <Checkbox>Allow downgrade</Checkbox>
          </Form.Item>
          {!firmware.key_id && (
            <Form.Item
              name="allow_unsigned"
              valuePropName="checked"
              extra={
                admin
                  ? "This bundle is unsigned: only devices flashed to allow unsigned bundles install it."
                  : "This bundle is unsigned: only an admin can start its rollout."
              }
            >
              <Checkbox disabled={!admin}>Allow unsigned (development)</Checkbox>
            </Form.Item>
          )}
        </Form>
      </Modal>
    </>
  );
}

import { useEffect, useState } from "react";
import {
  Alert,
  Button,
  Col,
  Form,
  Input,
  InputNumber,
  Modal,
  Row,
  Select,
  Space,
  Switch,
  Table,
  Tag,
  Typography,
} from "antd";
import { RelativeTime } from "../../components/RelativeTime";
import { EMPTY_FORM, TRIGGER_TYPES, fromForm, toForm, type RuleForm } from "./builder";
import { dryRun, type DryRun, type Rule, type RuleBody, type Template } from "./service";

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].map((label, value) => ({ label, value }));

export interface RuleBuilderProps {
  open: boolean;
  rule: Rule | null; // null: a new rule
  templates: Template[];
  deviceIds: string[];
  onSave: (body: RuleBody) => Promise<void>;
  onClose: () => void;
}

/** The rule form: start from a template, set the trigger, see when it would have
 * fired over recent history (dry run), save. */
export function RuleBuilder({ open, rule, templates, deviceIds, onSave, onClose }: RuleBuilderProps) {
  const [form] = Form.useForm<RuleForm>();
  const [problem, setProblem] = useState<string | null>(null);
  const [result, setResult] = useState<DryRun | null>(null);
  const [hours, setHours] = useState(24);
  const [busy, setBusy] = useState(false);
  const type = Form.useWatch("trigger_type", form);

  useEffect(() => {
    if (!open) return;
    form.setFieldsValue(rule ? toForm(rule) : EMPTY_FORM);
    setProblem(null);
    setResult(null);
  }, [open, rule, form]);

  const options = templates.flatMap((t) =>
    t.rules.map((r, i) => ({ value: `${t.id}:${i}`, label: t.rules.length > 1 ? `${t.title}: ${String(r.name)}` : t.title })),
  );

  function applyTemplate(key: string) {
    const [id, index] = key.split(":");
    const body = templates.find((t) => t.id === id)?.rules[Number(index)];
    if (body) form.setFieldsValue(toForm(body as Partial<RuleBody>));
    setResult(null);
  }

  async function body(): Promise<RuleBody | null> {
    const values = await form.validateFields().catch(() => null);
    if (!values) return null;
    try {
      setProblem(null);
      return fromForm({ ...form.getFieldsValue(true), ...values });
    } catch (exc) {
      setProblem(exc instanceof Error ? exc.message : String(exc));
      return null;
    }
  }

  async function runDry() {
    const b = await body();
    if (!b) return;
    setBusy(true);
    try {
      setResult(await dryRun(b, hours));
    } catch {
      /* reported centrally */
    } finally {
      setBusy(false);
    }
  }

  async function save() {
    const b = await body();
    if (!b) return;
    setBusy(true);
    try {
      await onSave(b);
    } catch {
      /* reported centrally */
    } finally {
      setBusy(false);
    }
  }

  const metricTrigger = type === "threshold" || type === "rate";
  return (
    <Modal
      open={open}
      width={820}
      title={rule ? `Edit rule: ${rule.name}` : "New rule"}
      onCancel={onClose}
      footer={
        <Space>
          <Select
            aria-label="Dry run window"
            value={hours}
            onChange={setHours}
            options={[1, 6, 24, 72, 168].map((h) => ({ value: h, label: `last ${h} h` }))}
          />
          <Button onClick={runDry} loading={busy}>
            Dry run
          </Button>
          <Button onClick={onClose}>Cancel</Button>
          <Button type="primary" onClick={save} loading={busy}>
            Save
          </Button>
        </Space>
      }
    >
      {!rule && (
        <Select
          aria-label="Template"
          placeholder="Start from a template…"
          style={{ width: "100%", marginBottom: 16 }}
          options={options}
          onChange={applyTemplate}
        />
      )}
      <Form form={form} layout="vertical" initialValues={EMPTY_FORM} size="small">
        <Row gutter={12}>
          <Col span={16}>
            <Form.Item name="name" label="Name" rules={[{ required: true, message: "A rule needs a name" }]}>
              <Input />
            </Form.Item>
          </Col>
          <Col span={4}>
            <Form.Item name="cooldown_seconds" label="Cooldown (s)">
              <InputNumber min={0} style={{ width: "100%" }} />
            </Form.Item>
          </Col>
          <Col span={4}>
            <Form.Item name="enabled" label="Enabled" valuePropName="checked">
              <Switch />
            </Form.Item>
          </Col>
        </Row>
        <Form.Item name="description" label="Description">
          <Input />
        </Form.Item>
        <Row gutter={12}>
          <Col span={12}>
            <Form.Item name="devices" label="Devices (empty: all)">
              <Select mode="tags" options={deviceIds.map((d) => ({ value: d, label: d }))} />
            </Form.Item>
          </Col>
          <Col span={8}>
            <Form.Item name="tags" label="Tags">
              <Select mode="tags" />
            </Form.Item>
          </Col>
          <Col span={4}>
            <Form.Item name="device_type" label="Type">
              <Input />
            </Form.Item>
          </Col>
        </Row>
        <Form.Item name="trigger_type" label="Trigger">
          <Select options={TRIGGER_TYPES} />
        </Form.Item>
        {metricTrigger && (
          <Row gutter={12}>
            <Col span={6}>
              <Form.Item name="metric" label="Metric" rules={[{ required: true }]}>
                <Input />
              </Form.Item>
            </Col>
            <Col span={6}>
              <Form.Item name="op" label={type === "rate" ? "Direction" : "Crosses"}>
                <Select
                  options={(type === "rate" ? ["rises", "falls"] : ["above", "below"]).map((v) => ({ value: v, label: v }))}
                />
              </Form.Item>
            </Col>
            <Col span={4}>
              <Form.Item name="value" label={type === "rate" ? "Per minute" : "Value"} rules={[{ required: true }]}>
                <InputNumber style={{ width: "100%" }} />
              </Form.Item>
            </Col>
            {type === "threshold" && (
              <>
                <Col span={4}>
                  <Form.Item name="hysteresis" label="Hysteresis">
                    <InputNumber min={0} style={{ width: "100%" }} />
                  </Form.Item>
                </Col>
                <Col span={4}>
                  <Form.Item name="for_seconds" label="Holds for (s)">
                    <InputNumber min={0} style={{ width: "100%" }} />
                  </Form.Item>
                </Col>
              </>
            )}
          </Row>
        )}
        {type === "offline" && (
          <Form.Item name="for_seconds" label="Offline for (s)">
            <InputNumber min={0} />
          </Form.Item>
        )}
        {type === "schedule" && (
          <Row gutter={12}>
            <Col span={4}>
              <Form.Item name="at" label="At (HH:MM)">
                <Input placeholder="18:00" />
              </Form.Item>
            </Col>
            <Col span={6}>
              <Form.Item name="cron" label="or cron">
                <Input placeholder="*/15 * * * *" />
              </Form.Item>
            </Col>
            <Col span={8}>
              <Form.Item name="weekdays" label="Weekdays (empty: every day)">
                <Select mode="multiple" options={WEEKDAYS} />
              </Form.Item>
            </Col>
            <Col span={6}>
              <Form.Item name="timezone" label="Time zone">
                <Input />
              </Form.Item>
            </Col>
          </Row>
        )}
        {type === "alert_raised" && (
          <Form.Item name="min_severity" label="At least">
            <Select options={["info", "warning", "critical"].map((v) => ({ value: v, label: v }))} />
          </Form.Item>
        )}
        <Row gutter={12}>
          <Col span={12}>
            <Form.Item name="conditions" label="Conditions (JSON list)">
              <Input.TextArea rows={6} style={{ fontFamily: "monospace" }} />
            </Form.Item>
          </Col>
          <Col span={12}>
            <Form.Item name="actions" label="Actions (JSON list)">
              <Input.TextArea rows={6} style={{ fontFamily: "monospace" }} />
            </Form.Item>
          </Col>
        </Row>
      </Form>
      {problem && <Alert type="error" showIcon message={problem} />}
      {result && <DryRunResult result={result} />}
    </Modal>
  );
}

export function DryRunResult({ result }: { result: DryRun }) {
  return (
    <div data-testid="dry-run">
      <Typography.Paragraph>
        Over {result.samples.toLocaleString()} recorded samples{result.truncated ? " (truncated)" : ""}: would have{" "}
        <b>fired {result.fired} times</b> and cleared {result.cleared} times.
      </Typography.Paragraph>
      <Table
        size="small"
        rowKey={(f) => `${f.ts}:${f.kind}:${f.device_id ?? ""}`}
        dataSource={result.firings}
        pagination={{ pageSize: 10, hideOnSinglePage: true }}
        locale={{ emptyText: "It would not have fired." }}
        columns={[
          { title: "When", dataIndex: "ts", render: (t: string) => <RelativeTime iso={t} /> },
          { title: "", dataIndex: "kind", render: (k: string) => <Tag color={k === "fire" ? "red" : "green"}>{k}</Tag> },
          { title: "Device", dataIndex: "device_id" },
          {
            title: "Value",
            key: "value",
            render: (_: unknown, f) => (f.context.value === undefined ? "" : String(f.context.value)),
          },
        ]}
      />
    </div>
  );
}

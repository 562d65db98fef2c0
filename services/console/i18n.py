"""The console's languages: English (the message ids themselves) and Simplified Chinese.

A message is its English text; `translator(lang)` gives a function looking it up in the catalogue and
filling `{name}` fields. The language is the one the person chose (kept in the session), else the
best match of the browser's Accept-Language, else English. A message missing from a catalogue shows
in English rather than failing.
"""

from collections.abc import Callable

from starlette.requests import Request

LANGUAGES = {"en": "English", "zh-CN": "简体中文"}
DEFAULT = "en"

# English labels for the ids the services answer with (statuses, categories, roles, kinds).
EN = {
    "pending_review": "pending review", "on_hold": "on hold", "missing_in_report": "Missing in report",
    "missing_internally": "Missing internally", "amount_mismatch": "Amount mismatch",
    "currency_mismatch": "Currency mismatch", "duplicate": "Duplicate", "reversed": "Reversed",
    "fee_mismatch": "Fee mismatch", "reviewer": "reviewer", "senior_reviewer": "senior reviewer",
    "finance_lead": "finance lead", "paid_outside": "paid outside", "new_destination": "new destination",
    "reroute": "re-route",
}
ZH_CN = {
    "reviewer": "审核员", "senior_reviewer": "高级审核员", "finance_lead": "财务主管",
    # frame and navigation
    "Operations console": "运营控制台", "Refunds": "退款", "Refund operations": "退款运营",
    "Skip to content": "跳到正文", "Sections": "栏目", "Queue": "审核队列", "Tickets": "工单",
    "Reconciliation": "对账", "Dead letters": "死信", "Failed payouts": "失败的打款", "Sign out": "退出登录",
    # sign-in
    "Sign in": "登录", "Sign in with the identity provider": "通过身份提供方登录", "Local demo sign-in": "本地演示登录",
    "User": "用户", "Password": "密码", "The demo password is printed at the end of make demo.":
        "演示密码在 make demo 结束时打印。", "No sign-in is configured.": "未配置任何登录方式。",
    "Unknown user or wrong password.": "用户不存在或密码错误。",
    "Local sign-in is only available in a local environment.": "本地登录仅在本地环境可用。",
    "The identity provider did not sign you in: {message}": "身份提供方未能让您登录：{message}",
    # queue
    "Filters": "筛选", "State": "状态", "Kind": "类型", "Channel": "渠道", "Region": "地区", "Rule": "规则",
    "Min amount": "最小金额", "Max amount": "最大金额", "Currency": "币种", "Filter": "筛选", "all": "全部",
    "open": "待处理", "expired": "已过期", "review": "人工审核", "hold": "风险冻结",
    "Amounts are numbers in the currency's major units, e.g. 100.00.": "金额请填写货币主单位数字，例如 100.00。",
    "{n} waiting, oldest first": "{n} 项待处理，最早的在前", "Reviews and holds waiting for a person": "等待人工处理的审核和冻结",
    "Refund": "退款", "Amount": "金额", "Channel / region": "渠道 / 地区", "Rules": "规则", "Time to SLA": "距 SLA",
    "Approvals": "批准", "Who may decide": "可决定的角色", "Action": "操作", "policy": "策略",
    "waiting for a second approver": "等待第二位审批人", "Decision": "决定", "approve": "批准", "deny": "拒绝",
    "release": "解除冻结", "Reason": "原因", "Decide": "提交决定", "Reopen": "重新打开", "Reopen: {roles}": "可重新打开：{roles}",
    "Nothing waiting.": "没有待处理项。", "{span} left": "剩余 {span}", "overdue by {span}": "已超时 {span}",
    "{d}d {h}h": "{d}天{h}小时", "{h}h {m}m": "{h}小时{m}分", "{m}m": "{m}分",
    "{action}: recorded for {refund_id}.": "已为 {refund_id} 记录：{action}。", "Reopened {refund_id}.": "已重新打开 {refund_id}。",
    # tickets
    "Refund, order, request or customer id": "退款、订单、请求或客户编号", "Search": "搜索", "Order": "订单",
    "Request": "请求", "Customer": "客户", "Status": "状态", "Updated": "更新时间", "No ticket matches.": "没有匹配的工单。",
    "Open the ticket of {id}": "打开 {id} 的工单", "Ticket": "工单", "from {service}": "来自 {service}",
    "Showing the public tracking view.": "显示公开的跟踪视图。", "Reason codes": "原因代码", "Expected by": "预计完成",
    "Timeline": "时间线", "At": "时间", "Event": "事件", "Stage deadlines": "各阶段截止时间", "Stage": "阶段",
    "Deadline and actual": "截止与实际", "Deadline": "截止时间", "Actual": "实际时间", "Within SLA": "是否在 SLA 内",
    "late": "超时", "Policy and review": "策略与审核",
    "No review: decided by the policy without a person.": "无人工审核：由策略自动决定。", "Policy version": "策略版本",
    "Due": "截止", "Audit trail": "审计记录", "Who": "操作人", "Payout": "打款", "No payout yet.": "尚未打款。",
    "Attempts": "尝试", "Gateway": "网关", "Gateway reference": "网关参考号", "Failure": "失败原因", "Exits": "出口处理",
    "Exit": "出口", "Details": "详情", "None.": "无。", "Choose an exit on the failed payouts page": "在失败的打款页面选择处理方式",
    "Settlement": "结算", "Nothing settled yet.": "尚未结算。", "Report": "报告", "Fee": "手续费", "Type": "类型",
    "Matched": "已匹配", "Received": "收到时间", "No settlement lines yet.": "尚无结算行。", "Discrepancies": "差异",
    "Notifications and feedback": "通知与反馈", "Template": "模板", "Sent": "发送时间", "Feedback": "反馈",
    "No feedback yet.": "尚无反馈。", "yes": "是", "no": "否",
    # statuses
    "received": "已收到", "accepted": "已受理", "pending_review": "待审核", "on_hold": "已冻结", "approved": "已批准",
    "denied": "已拒绝", "paid": "已打款", "failed": "打款失败", "completed": "已完成", "reconciled": "已对账",
    "rejected": "已驳回", "resolved": "已解决", "replayed": "已重放", "discarded": "已丢弃",
    # reconciliation
    "Ledger per currency": "各币种账目", "Paid": "已付", "Open": "未结", "Balanced": "平衡", "Resolved": "已解决", "Awaiting a line": "等待结算行", "Nothing paid yet.": "尚无付款。",
    "Category": "类别", "No discrepancies.": "没有差异。", "Expected": "应付", "Settled": "已结算", "Opened": "发现时间",
    "Resolve": "解决", "Discrepancy {id} resolved.": "差异 {id} 已解决。",
    "missing_in_report": "报告中缺失", "missing_internally": "内部缺失", "amount_mismatch": "金额不符",
    "currency_mismatch": "币种不符", "duplicate": "重复", "reversed": "已冲回", "fee_mismatch": "手续费不符",
    # dead letters
    "Service": "服务", "Breaker open since {at}: consuming is paused.": "熔断器自 {at} 起打开：已暂停消费。",
    "Breaker closed.": "熔断器已关闭。", "{n} dead letters in the last minute (limit {limit}).": "最近一分钟 {n} 条死信（上限 {limit}）。",
    "Close the breaker": "关闭熔断器", "Error": "错误", "Origin": "来源", "key": "键", "Payload": "内容",
    "Replay": "重放", "Discard": "丢弃", "No dead letters.": "没有死信。",
    "Dead letter {id} of {service}: {action} done.": "{service} 的死信 {id}：{action}已完成。",
    "The breaker of {service} is closed; it consumes again.": "{service} 的熔断器已关闭，恢复消费。",
    "replay": "重放", "discard": "丢弃",
    # failed payouts
    "Failed": "失败时间", "Re-route": "改走其他网关", "Paid outside": "线下已付", "An exit is pending.": "已有待处理的出口。",
    "Reference": "参考号", "Evidence": "凭证", "Record paid outside": "记录线下已付", "No failed payouts waiting.": "没有待处理的失败打款。",
    "reroute": "改走其他网关", "paid_outside": "线下已付", "new_destination": "新的收款账户",
    "Exit {exit} requested for {refund_id}.": "已为 {refund_id} 申请出口处理：{exit}。",
    # notices and errors
    "A reason is required.": "必须填写原因。", "The form expired; please try again.": "表单已过期，请重试。",
    "{service} refused ({status}): {message}": "{service} 拒绝了请求（{status}）：{message}",
    "{service} answered {status}: {message}": "{service} 返回 {status}：{message}",
    "Not available from {service}.": "{service} 暂不提供此功能。", "Not found": "未找到",
}
CATALOGUES = {"en": EN, "zh-CN": ZH_CN}


def negotiate(accept_language: str) -> str:
    """The best of our languages for an Accept-Language header (`zh`, `zh-CN`, `zh-Hans` -> zh-CN)."""
    choices = []
    for i, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        choices.append((-weight, i, tag.strip().lower()))
    for _, _, tag in sorted(choices):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en") or tag == "*":
            return "en"
    return DEFAULT


def language(request: Request) -> str:
    chosen = request.query_params.get("lang") or request.session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    return negotiate(request.headers.get("accept-language", ""))


def translator(lang: str) -> Callable[..., str]:
    catalogue = CATALOGUES.get(lang, {})

    def translate(message: str, /, **fields) -> str:
        text = catalogue.get(message, message) if isinstance(message, str) else str(message)
        return text.format(**fields) if fields else text

    return translate

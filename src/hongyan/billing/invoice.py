"""Invoice PDF for a paid recharge (pure: data in, bytes out).

Chinese text uses reportlab's built-in CID font STSong-Light: PDF viewers supply the glyphs (Adobe's
Asian font packs, or their substitutes), so nothing is embedded, shipped or downloaded — offline-safe.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from hongyan.core.money import format_micros

FONT = "STSong-Light"
pdfmetrics.registerFont(UnicodeCIDFont(FONT))

PROVIDER_NAMES = {"operator": "转账 / Bank transfer (operator)", "sandbox": "沙箱支付 / Sandbox"}


@dataclass(frozen=True, slots=True)
class InvoiceData:
    invoice_number: str
    order_id: str
    paid_at: datetime
    account_id: str
    account_name: str
    amount_micros: int
    bonus_micros: int
    currency: str
    provider: str
    seller: str = "鸿雁 Hongyan"


def _fit(text: str, width: float, size: float) -> str:
    """Shorten with an ellipsis so a long customer name stays on the page."""
    if pdfmetrics.stringWidth(text, FONT, size) <= width:
        return text
    while text and pdfmetrics.stringWidth(text + "…", FONT, size) > width:
        text = text[:-1]
    return text + "…"


def render_invoice(data: InvoiceData) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=True)  # invariant: same bytes for the same data
    pdf.setTitle(f"Invoice {data.invoice_number}")
    pdf.setAuthor(data.seller)
    width, height = A4
    x, y = 20 * mm, height - 25 * mm
    pdf.setFont(FONT, 20)
    pdf.drawString(x, y, "充值发票 / Recharge invoice")
    pdf.setFont(FONT, 10)
    pdf.drawRightString(width - 20 * mm, y, data.seller)
    y -= 14 * mm
    money = data.currency
    rows = [
        ("发票号 / Invoice no.", data.invoice_number),
        ("日期 / Date (UTC)", data.paid_at.strftime("%Y-%m-%d %H:%M")),
        ("订单 / Order", data.order_id),
        ("客户 / Customer", data.account_name),
        ("客户编号 / Account", data.account_id),
        ("支付方式 / Paid by", PROVIDER_NAMES.get(data.provider, data.provider)),
    ]
    pdf.setFont(FONT, 11)
    value_width = width - 40 * mm - 55 * mm
    for label, value in rows:
        pdf.drawString(x, y, label)
        pdf.drawString(x + 55 * mm, y, _fit(value, value_width, 11))
        y -= 7 * mm
    y -= 6 * mm
    pdf.line(x, y + 4 * mm, width - 20 * mm, y + 4 * mm)
    lines = [("充值金额 / Amount paid", data.amount_micros)]
    if data.bonus_micros:
        lines.append(("赠送金额 / Bonus credit (not paid)", data.bonus_micros))
    lines.append(("到账合计 / Credited in total", data.amount_micros + data.bonus_micros))
    for label, amount in lines:
        pdf.drawString(x, y, label)
        pdf.drawRightString(width - 20 * mm, y, f"{format_micros(amount, money)} {money}")
        y -= 7 * mm
    y -= 8 * mm
    pdf.setFont(FONT, 8)
    pdf.drawString(x, y, "本单据为平台充值凭证；增值税发票请向运营方申请。")
    pdf.drawString(x, y - 4 * mm, "This is a receipt for prepaid credit; ask the operator for a tax invoice (fapiao/VAT).")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()

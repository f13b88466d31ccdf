"""smpp channels routes receipts inbound

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 06:17:43.090125
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import hongyan.db.base

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('carrier_message',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('channel_id', sa.String(length=30), nullable=False),
    sa.Column('carrier_message_id', sa.String(length=65), nullable=False),
    sa.Column('message_id', sa.String(length=30), nullable=False),
    sa.Column('group_ref', sa.String(length=65), nullable=False),
    sa.Column('part', sa.SmallInteger(), nullable=False),
    sa.Column('parts', sa.SmallInteger(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=True),
    sa.Column('carrier_error_code', sa.String(length=32), nullable=True),
    sa.Column('created_at', hongyan.db.base.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_carrier_message'))
    )
    with op.batch_alter_table('carrier_message', schema=None) as batch_op:
        batch_op.create_index('ix_carrier_message_lookup', ['carrier_message_id', 'channel_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_carrier_message_message_id'), ['message_id'], unique=False)

    op.create_table('inbound_message',
    sa.Column('id', sa.String(length=30), nullable=False),
    sa.Column('account_id', sa.String(length=30), nullable=True),
    sa.Column('channel_id', sa.String(length=30), nullable=False),
    sa.Column('from_number', sa.String(length=32), nullable=False),
    sa.Column('to_number', sa.String(length=32), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('in_reply_to', sa.String(length=30), nullable=True),
    sa.Column('received_at', hongyan.db.base.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_message'))
    )
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.create_index('ix_inbound_message_account', ['account_id', 'id'], unique=False)
        batch_op.create_index('ix_inbound_message_from', ['from_number'], unique=False)

    op.create_table('route',
    sa.Column('id', sa.String(length=30), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('channel_id', sa.String(length=30), nullable=False),
    sa.Column('account_id', sa.String(length=30), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.Column('countries', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('prefixes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('message_types', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', hongyan.db.base.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', hongyan.db.base.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['channel.id'], name=op.f('fk_route_channel_id_channel'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_route'))
    )
    with op.batch_alter_table('route', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_route_channel_id'), ['channel_id'], unique=False)

    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_account_to'))
        batch_op.create_index('ix_message_to_account', ['to_number', 'account_id'], unique=False)




def downgrade() -> None:
    
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_to_account')
        batch_op.create_index(batch_op.f('ix_message_account_to'), ['account_id', 'to_number'], unique=False)

    with op.batch_alter_table('route', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_route_channel_id'))

    op.drop_table('route')
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_index('ix_inbound_message_from')
        batch_op.drop_index('ix_inbound_message_account')

    op.drop_table('inbound_message')
    with op.batch_alter_table('carrier_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_carrier_message_message_id'))
        batch_op.drop_index('ix_carrier_message_lookup')

    op.drop_table('carrier_message')


{#-
  One row per order with its line totals and payments: the columns of marts.fct_orders plus
  `_source_loaded_at`, the newest raw load that went into the row.

  Incremental: a run recomputes, whole, every order that any newly loaded raw row touches (the
  order itself, one of its lines, or one of its charges, e.g. a late refund), found through
  `_loaded_at` beyond this table's own high-water mark minus an overlap window. The marts cannot
  carry that bookkeeping column (the contract fixes their columns), so it lives here.
-#}
-- depends_on: {{ ref('stg_order_items') }}
-- depends_on: {{ ref('stg_stripe_charges') }}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='merge',
        tmp_relation_type='transient',
        on_schema_change='append_new_columns',
    )
}}

with

{% if is_incremental() %}
changed_orders as (
    {%- set lower_bound = incremental_lower_bound(this, '_source_loaded_at') %}
    select order_id from {{ ref('stg_orders') }} where _loaded_at > {{ lower_bound }}
    union
    select order_id from {{ ref('stg_order_items') }} where _loaded_at > {{ lower_bound }}
    union
    select order_id from {{ ref('stg_stripe_charges') }}
    where _loaded_at > {{ lower_bound }} and order_id is not null
),
{% endif %}

orders as (
    select * from {{ ref('stg_orders') }}
    {% if is_incremental() %}
    where order_id in (select order_id from changed_orders)
    {% endif %}
),

items as (
    select * from {{ ref('int_order_items_rolled_up') }}
),

payments as (
    select * from {{ ref('int_payments_per_order') }}
),

joined as (
    select
        orders.order_id,
        orders.customer_id,
        orders.ordered_at,
        orders.order_date,
        orders.status,
        orders.channel,
        cast(coalesce(items.item_count, 0) as bigint) as item_count,
        {{ money('coalesce(items.gross_amount, 0)') }} as gross_amount,
        {{ money('coalesce(items.discount_amount, 0)') }} as discount_amount,
        {{ money('coalesce(payments.amount_paid, 0)') }} as amount_paid,
        orders._loaded_at as order_loaded_at,
        items._loaded_at as items_loaded_at,
        payments._loaded_at as payments_loaded_at
    from orders
    left join items on orders.order_id = items.order_id
    left join payments on orders.order_id = payments.order_id
)

select
    order_id,
    customer_id,
    ordered_at,
    order_date,
    status,
    channel,
    item_count,
    gross_amount,
    discount_amount,
    {{ money('gross_amount - discount_amount') }} as net_amount,
    amount_paid,
    amount_paid >= gross_amount - discount_amount as is_fully_paid,
    greatest(
        order_loaded_at,
        coalesce(items_loaded_at, order_loaded_at),
        coalesce(payments_loaded_at, order_loaded_at)
    ) as _source_loaded_at
from joined

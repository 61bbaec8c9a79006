{#-
  One row per customer (contract: marts.dim_customers): first/last order time, order count and
  lifetime value over *counted* orders (status <> 'cancelled'); customers without counted orders
  have NULL timestamps, 0 orders and 0 lifetime value.

  Incremental: merges on customer_id only the customers whose values changed.
-#}
{%- set contract_columns = [
    'customer_id', 'email', 'country_code', 'first_ordered_at', 'last_ordered_at', 'order_count',
    'lifetime_value',
] -%}
{{
    config(
        materialized='incremental',
        unique_key='customer_id',
        incremental_strategy='merge',
        tmp_relation_type='transient',
        on_schema_change='fail',
    )
}}

with customers as (
    select * from {{ ref('stg_customers') }}
),

counted_orders as (
    select
        customer_id,
        min(ordered_at) as first_ordered_at,
        max(ordered_at) as last_ordered_at,
        count(*) as order_count,
        {{ sum_money('amount_paid') }} as lifetime_value
    from {{ ref('fct_orders') }}
    where {{ is_counted_order('status') }}
    group by customer_id
),

customer_values as (
    select
        customers.customer_id,
        customers.email,
        customers.country_code,
        counted_orders.first_ordered_at,
        counted_orders.last_ordered_at,
        cast(coalesce(counted_orders.order_count, 0) as bigint) as order_count,
        {{ money('coalesce(counted_orders.lifetime_value, 0)') }} as lifetime_value
    from customers
    left join counted_orders on customers.customer_id = counted_orders.customer_id
)

-- a loop writes the column list, which the layout rule cannot indent:
-- noqa: disable=LT02
select
    {%- for column in contract_columns %}
    customer_values.{{ column }}{{ "," if not loop.last }}
    {%- endfor %}
-- noqa: enable=LT02
from customer_values
{% if is_incremental() %}
left join {{ this }} as current_rows on current_rows.customer_id = customer_values.customer_id
where current_rows.customer_id is null
   or {{ rows_differ(contract_columns[1:], 'customer_values', 'current_rows') }}
{% endif %}
